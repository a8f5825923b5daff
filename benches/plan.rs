//! The live-plan benchmark: `hactl plan` against labs of 1 control-plane node and 0, 10 and 50
//! workers, side by side in one run, reported as wall time, peak memory and ratios to 0 workers.
//!
//! `cargo bench --bench plan` (root, the lab's packages; see README). Runs are interleaved
//! (0, 10, 50, 0, 10, 50, …) so that load on the machine affects every size alike; the
//! figures are medians. Not a test: nothing here fails on a slow machine.

#[path = "../tests/lab_support/mod.rs"]
mod lab_support;

use std::process::Command;
use std::time::{Duration, Instant};

use lab_support::{HACTL, Lab, plan};

/// Workers per lab; each lab gets its own loopback net (127.0.<net>.x).
const SIZES: [(usize, u8); 3] = [(0, 40), (10, 41), (50, 42)];
const ROUNDS: usize = 7;

/// One run of `hactl plan`.
struct Run {
    wall: Duration,
    /// Peak resident memory of the hactl process, KiB.
    peak_kib: i64,
    /// User + system CPU of hactl and the children it waited for (each node's `ssh` master
    /// until it backgrounds itself, i.e. the client side of every handshake), seconds.
    cpu: f64,
    code: i32,
}

/// Runs `hactl plan FILE` once.
fn run_plan(file: &std::path::Path) -> Run {
    let started = Instant::now();
    let child = Command::new(HACTL)
        .args(["plan", "--no-color"])
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start hactl");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // wait4 reports this one child's peak memory (getrusage would mix all children).
    // SAFETY: pid is our own unwaited child; the pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let elapsed = started.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    std::mem::forget(child);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run {
        wall: elapsed,
        peak_kib: usage.ru_maxrss,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        code,
    }
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

/// The measured runs of one lab under one SSH setting.
#[derive(Default)]
struct Series {
    wall: Vec<f64>,
    peak_kib: Vec<i64>,
    cpu: Vec<f64>,
}

/// The two ssh settings measured side by side: OpenSSH's default key exchange (Debian 12:
/// sntrup761x25519, post-quantum, about 70 ms of client CPU per connection here) and a
/// config file that asks for curve25519-sha256, to show what the handshakes cost.
const SETTINGS: [(&str, Option<&str>); 2] = [
    ("OpenSSH default key exchange", None),
    ("KexAlgorithms curve25519-sha256", Some("curve25519-sha256")),
];

/// The lab's hactl.toml, or a copy whose ssh config file first sets `KexAlgorithms kex`.
fn plan_file(lab: &Lab, kex: Option<&str>) -> std::path::PathBuf {
    let file = lab.dir.join("hactl.toml");
    let Some(kex) = kex else {
        return file;
    };
    let config = lab.dir.join("ssh_config");
    let kex_config = lab.dir.join("ssh_config.kex");
    let original = std::fs::read_to_string(&config).expect("the lab's ssh_config");
    std::fs::write(
        &kex_config,
        format!("Host *\n  KexAlgorithms {kex}\n{original}"),
    )
    .expect("write the ssh config copy");
    let text = std::fs::read_to_string(&file).expect("the lab's hactl.toml");
    let copy = lab.dir.join("hactl-kex.toml");
    let config = config.to_string_lossy().into_owned();
    assert!(text.contains(&config), "hactl.toml names {config}");
    std::fs::write(&copy, text.replace(&config, &kex_config.to_string_lossy()))
        .expect("write the plan copy");
    copy
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs this without --bench: nothing to measure then.
        return;
    }
    let labs: Vec<(usize, Lab)> = SIZES
        .iter()
        .map(|&(workers, net)| {
            eprintln!("lab up: 1 control-plane node, {workers} workers (127.0.{net}.x)");
            (
                workers,
                Lab::up(&format!("bench{net}"), &plan(net, 1, workers), &[]),
            )
        })
        .collect();
    let files: Vec<Vec<std::path::PathBuf>> = SETTINGS
        .iter()
        .map(|(_, kex)| labs.iter().map(|(_, lab)| plan_file(lab, *kex)).collect())
        .collect();
    let mut series: Vec<Vec<Series>> = SETTINGS
        .iter()
        .map(|_| labs.iter().map(|_| Series::default()).collect())
        .collect();
    for round in 0..=ROUNDS {
        for (s, files) in files.iter().enumerate() {
            for (i, (workers, _)) in labs.iter().enumerate() {
                let run = run_plan(&files[i]);
                assert!(
                    run.code == 0 || run.code == 2,
                    "hactl plan against the {workers}-worker lab exited {}",
                    run.code
                );
                // Round 0 warms caches (binary, page cache, sshd's first fork); not counted.
                if round > 0 {
                    let series = &mut series[s][i];
                    series.wall.push(run.wall.as_secs_f64());
                    series.peak_kib.push(run.peak_kib);
                    series.cpu.push(run.cpu);
                }
            }
        }
    }
    println!("hactl plan against a live lab, median of {ROUNDS} interleaved runs");
    println!(
        "| ssh | workers | nodes | wall time | peak memory | CPU (hactl + ssh clients) | time / 0 workers | memory / 0 workers |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (s, (name, _)) in SETTINGS.iter().enumerate() {
        let base_time = median(series[s][0].wall.clone());
        let base_mem = median(series[s][0].peak_kib.clone()) as f64;
        for (i, (workers, _)) in labs.iter().enumerate() {
            let t = median(series[s][i].wall.clone());
            let m = median(series[s][i].peak_kib.clone());
            println!(
                "| {name} | {workers} | {} | {:.3} s | {:.1} MiB | {:.2} s | {:.2} | {:.2} |",
                workers + 1,
                t,
                m as f64 / 1024.0,
                median(series[s][i].cpu.clone()),
                t / base_time,
                m as f64 / base_mem
            );
        }
    }
}
