//! The journal of one run, as a value: the records apply writes (one JSON object per line,
//! each made durable before the next action), read back into what the run did, for rollback
//! after a failure or a crash. It never holds a secret: hashes, paths, names, the old content
//! of ConfigMap keys (which kubeadm writes in the clear), never a file's or a key's bytes.

use serde::{Deserialize, Serialize};

use crate::seams::Backup;

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Record {
    /// The run and what it applies (the plan's fingerprint; the plan itself sits beside).
    Started {
        run: String,
        cluster: String,
        plan_fingerprint: String,
        steps: Vec<String>,
    },
    StepStarted {
        step: String,
    },
    /// A node file was copied before it is changed.
    BackedUp {
        step: String,
        backup: Backup,
    },
    /// About to replace a ConfigMap key: what it held, to put back.
    ConfigMapBefore {
        step: String,
        namespace: String,
        name: String,
        key: String,
        old_content: String,
        new_sha256: String,
    },
    /// About to write a node file with this content hash: after a crash, a file with this
    /// hash is hactl's write, one with the backup's hash was never changed.
    Writing {
        step: String,
        sha256: String,
    },
    StepDone {
        step: String,
    },
    StepFailed {
        step: String,
        error: String,
    },
    UndoStarted {
        step: String,
    },
    Undone {
        step: String,
    },
    /// Rollback left this step as it was, and why (a file changed since hactl wrote it).
    UndoFailed {
        step: String,
        error: String,
    },
    Finished {
        outcome: String,
    },
}

impl Record {
    /// The record as one journal line (with its newline).
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    pub fn step(&self) -> Option<&str> {
        match self {
            Record::StepStarted { step }
            | Record::BackedUp { step, .. }
            | Record::ConfigMapBefore { step, .. }
            | Record::Writing { step, .. }
            | Record::StepDone { step }
            | Record::StepFailed { step, .. }
            | Record::UndoStarted { step }
            | Record::Undone { step }
            | Record::UndoFailed { step, .. } => Some(step),
            Record::Started { .. } | Record::Finished { .. } => None,
        }
    }
}

/// Why a journal cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("{file}: line {line} is not a journal record ({detail}); the journal is damaged")]
    BadLine {
        file: String,
        line: usize,
        detail: String,
    },
    #[error("{file}: the journal does not start with the run's record")]
    NoStart { file: String },
}

/// A journal read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    pub records: Vec<Record>,
    /// The last line was cut off (a crash while writing it): it was left out.
    pub truncated: bool,
}

/// Reads a journal; a last line cut off mid-record (as SIGKILL leaves it) is left out and
/// said, a bad line before it is an error naming the line.
pub fn parse(file: &str, text: &str) -> Result<Journal, JournalError> {
    let mut journal = Journal::default();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        match serde_json::from_str::<Record>(line.trim_end_matches('\n')) {
            Ok(r) if line.ends_with('\n') => journal.records.push(r),
            // A whole object without its newline: the write stopped just before it.
            _ if last => journal.truncated = true,
            Err(e) => {
                return Err(JournalError::BadLine {
                    file: file.into(),
                    line: i + 1,
                    detail: e.to_string(),
                });
            }
            Ok(_) => unreachable!("only the last line can lack its newline"),
        }
    }
    if !matches!(journal.records.first(), Some(Record::Started { .. }) | None) {
        return Err(JournalError::NoStart { file: file.into() });
    }
    Ok(journal)
}

/// A ConfigMap key as it was before hactl replaced it, and the hash of what replaced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapBefore {
    pub namespace: String,
    pub name: String,
    pub key: String,
    pub old_content: String,
    pub new_sha256: String,
}

/// What a run did to one step, from its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepState {
    pub started: bool,
    pub backup: Option<Backup>,
    /// The hash of what hactl was writing to the node file.
    pub writing: Option<String>,
    /// The ConfigMap key replaced, and what it held.
    pub configmap: Option<ConfigMapBefore>,
    pub done: bool,
    pub failed: Option<String>,
    pub undone: bool,
    pub undo_failed: Option<String>,
}

impl Journal {
    /// The run id and step order from the first record.
    pub fn started(&self) -> Option<(&str, &[String])> {
        match self.records.first() {
            Some(Record::Started { run, steps, .. }) => Some((run, steps)),
            _ => None,
        }
    }

    /// Whether the run ended (applied, or rolled back however far it got).
    pub fn finished(&self) -> Option<&str> {
        self.records.iter().rev().find_map(|r| match r {
            Record::Finished { outcome } => Some(outcome.as_str()),
            _ => None,
        })
    }

    /// Each step's state, by step id.
    pub fn steps(&self) -> std::collections::BTreeMap<String, StepState> {
        let mut out: std::collections::BTreeMap<String, StepState> = Default::default();
        for r in &self.records {
            let Some(step) = r.step() else { continue };
            let s = out.entry(step.to_string()).or_default();
            match r {
                Record::StepStarted { .. } => s.started = true,
                Record::BackedUp { backup, .. } => s.backup = Some(backup.clone()),
                Record::ConfigMapBefore {
                    namespace,
                    name,
                    key,
                    old_content,
                    new_sha256,
                    ..
                } => {
                    s.configmap = Some(ConfigMapBefore {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        key: key.clone(),
                        old_content: old_content.clone(),
                        new_sha256: new_sha256.clone(),
                    })
                }
                Record::Writing { sha256, .. } => s.writing = Some(sha256.clone()),
                Record::StepDone { .. } => s.done = true,
                Record::StepFailed { error, .. } => s.failed = Some(error.clone()),
                Record::Undone { .. } => s.undone = true,
                Record::UndoFailed { error, .. } => s.undo_failed = Some(error.clone()),
                Record::UndoStarted { .. } | Record::Started { .. } | Record::Finished { .. } => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        vec![
            Record::Started {
                run: "r1".into(),
                cluster: "lab".into(),
                plan_fingerprint: "sha256:aa".into(),
                steps: vec!["kubeconfig.cp1.admin".into()],
            },
            Record::StepStarted {
                step: "kubeconfig.cp1.admin".into(),
            },
            Record::Writing {
                step: "kubeconfig.cp1.admin".into(),
                sha256: "sha256:bb".into(),
            },
        ]
    }

    #[test]
    fn a_journal_reads_back_and_a_line_cut_off_is_left_out_and_said() {
        let text: String = records().iter().map(Record::line).collect();
        let j = parse("j", &text).unwrap();
        assert_eq!(j.records, records());
        assert!(!j.truncated);
        let st = &j.steps()["kubeconfig.cp1.admin"];
        assert!(st.started && !st.done);
        assert_eq!(st.writing.as_deref(), Some("sha256:bb"));
        // SIGKILL mid-line: the half record is dropped, and said.
        let cut = &text[..text.len() - 10];
        let j = parse("j", cut).unwrap();
        assert_eq!(j.records, records()[..2]);
        assert!(j.truncated);
        // A whole record missing only its newline: still not trusted as written.
        let j = parse("j", text.trim_end()).unwrap();
        assert!(j.truncated && j.records.len() == 2);
    }

    #[test]
    fn a_damaged_line_before_the_end_is_an_error_naming_it() {
        let mut lines: Vec<String> = records().iter().map(Record::line).collect();
        lines[1] = "{\"record\":\"nonsense\"}\n".into();
        let err = parse("/x/journal", &lines.concat()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/x/journal: line 2 is not a journal record"),
            "{err}"
        );
        let err = parse("j", &records()[1].line()).unwrap_err();
        assert_eq!(err, JournalError::NoStart { file: "j".into() });
    }
}
