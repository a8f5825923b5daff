//! Runs on the operator's machine: `.hactl/runs/<id>/` beside the desired-state file, holding
//! the plan the run applies (`plan.json`) and its journal (`journal.jsonl`), each record
//! appended and fsynced before apply takes its next action. Edge: the only local files apply
//! writes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::apply::driver::Sink;
use crate::apply::journal::{self, Journal, Record};

/// Where a desired-state file's runs live.
pub fn runs_dir(desired_state_file: &Path) -> PathBuf {
    desired_state_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(".hactl")
        .join("runs")
}

/// A run id that sorts by time: `20261204T174000Z-1a2b`.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let mut b = [0u8; 2];
    let _ = crate::pki::random_bytes(&mut b);
    format!("{stamp}-{}", hex::encode(b))
}

/// Why a run directory could not be made or read; each names the file.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RunError {
    #[error("{path}: {error}")]
    #[diagnostic(
        code(hactl::apply::run),
        help("check the path and its permissions, and that its disk has room")
    )]
    Io { path: String, error: std::io::Error },
    #[error(transparent)]
    #[diagnostic(code(hactl::apply::run))]
    Journal(#[from] journal::JournalError),
    #[error("nothing to roll back: {dir} holds no run")]
    #[diagnostic(
        code(hactl::apply::run),
        help(
            "`hactl apply FILE` records each run in .hactl/runs beside FILE; roll back with the desired-state file the run was applied from"
        )
    )]
    NoRuns { dir: String },
    #[error("no run {run} in {dir} (the runs there: {known})")]
    #[diagnostic(
        code(hactl::apply::run),
        help("name one of the runs there, or leave RUN out to roll back the latest")
    )]
    NoSuchRun {
        run: String,
        dir: String,
        known: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.display().to_string(),
        error: source,
    }
}

/// Writes `bytes` to `path` and makes it durable (file, then directory).
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// One run's directory.
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
}

impl RunDir {
    /// Makes the run's directory with the plan it applies.
    pub fn create(runs: &Path, id: &str, plan_json: &str) -> Result<RunDir, RunError> {
        let path = runs.join(id);
        fs::create_dir_all(&path).map_err(io(&path))?;
        write_durably(&path.join("plan.json"), plan_json.as_bytes())?;
        Ok(RunDir {
            id: id.to_string(),
            path,
        })
    }

    /// An existing run, or the latest one (ids sort by time).
    pub fn open(runs: &Path, id: Option<&str>) -> Result<RunDir, RunError> {
        let known = Self::list(runs);
        let Some(id) = id.map(str::to_string).or_else(|| known.last().cloned()) else {
            return Err(RunError::NoRuns {
                dir: runs.display().to_string(),
            });
        };
        if !known.contains(&id) {
            return Err(RunError::NoSuchRun {
                run: id,
                dir: runs.display().to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
        Ok(RunDir {
            path: runs.join(&id),
            id,
        })
    }

    /// The run ids in `runs`, oldest first.
    pub fn list(runs: &Path) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(runs)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("plan.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    pub fn journal_path(&self) -> PathBuf {
        self.path.join("journal.jsonl")
    }

    pub fn plan_json(&self) -> Result<String, RunError> {
        let p = self.path.join("plan.json");
        fs::read_to_string(&p).map_err(io(&p))
    }

    /// The journal as written so far (a last line cut off by a crash left out, and said).
    pub fn journal(&self) -> Result<Journal, RunError> {
        let p = self.journal_path();
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&p)(e)),
        };
        Ok(journal::parse(&p.display().to_string(), &text)?)
    }

    /// A sink appending to the run's journal, each record fsynced before `append` returns. A
    /// last line cut off by a crash (never a whole record; `journal` leaves it out) is cut
    /// away first, so that what follows starts on a line of its own.
    pub fn sink(&self) -> Result<FileSink, RunError> {
        let p = self.journal_path();
        if let Ok(text) = fs::read(&p)
            && !text.is_empty()
            && !text.ends_with(b"\n")
        {
            let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let f = OpenOptions::new().write(true).open(&p).map_err(io(&p))?;
            f.set_len(whole as u64).map_err(io(&p))?;
            f.sync_all().map_err(io(&p))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(&p))?;
        Ok(FileSink { file, path: p })
    }
}

/// The journal file of a run.
pub struct FileSink {
    file: File,
    path: PathBuf,
}

impl Sink for FileSink {
    fn append(&mut self, record: &Record) -> Result<(), String> {
        let line = record.line();
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hactl-runs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_run_keeps_its_plan_and_a_journal_that_survives_a_cut_last_line() {
        let runs = dir("journal");
        assert_eq!(
            runs_dir(Path::new("/srv/cluster/hactl.toml")),
            Path::new("/srv/cluster/.hactl/runs")
        );
        let id = new_run_id();
        assert_eq!(id.len(), "20261204T174000Z-1a2b".len(), "{id}");
        let run = RunDir::create(&runs, &id, "{\"format_version\": \"1.1\"}").unwrap();
        let mut sink = run.sink().unwrap();
        let started = Record::Started {
            run: id.clone(),
            cluster: "lab".into(),
            plan_fingerprint: "sha256:aa".into(),
            steps: vec!["kubeconfig.cp1.admin".into()],
        };
        let step = Record::StepStarted {
            step: "kubeconfig.cp1.admin".into(),
        };
        sink.append(&started).unwrap();
        sink.append(&step).unwrap();
        let again = RunDir::open(&runs, None).unwrap();
        assert_eq!(again.id, id);
        assert_eq!(again.plan_json().unwrap(), "{\"format_version\": \"1.1\"}");
        let j = again.journal().unwrap();
        assert_eq!(j.records, [started.clone(), step]);
        // SIGKILL mid-write: the half line is left out and said.
        let p = again.journal_path();
        let text = fs::read_to_string(&p).unwrap();
        fs::write(&p, &text[..text.len() - 7]).unwrap();
        let j = again.journal().unwrap();
        assert_eq!(j.records, [started]);
        assert!(j.truncated);
        // A run that does not exist is named, with the ones that do.
        let err = RunDir::open(&runs, Some("nope")).err().unwrap().to_string();
        assert!(err.contains("no run nope in") && err.contains(&id), "{err}");
        fs::remove_dir_all(&runs).unwrap();
    }
}
