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
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); labs.len()];
    let mut memory: Vec<Vec<i64>> = vec![Vec::new(); labs.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); labs.len()];
    for round in 0..=ROUNDS {
        for (i, (workers, lab)) in labs.iter().enumerate() {
            let run = run_plan(&lab.dir.join("hactl.toml"));
            assert!(
                run.code == 0 || run.code == 2,
                "hactl plan against the {workers}-worker lab exited {}",
                run.code
            );
            // Round 0 warms caches (binary, page cache, sshd's first fork) and is not counted.
            if round > 0 {
                times[i].push(run.wall.as_secs_f64());
                memory[i].push(run.peak_kib);
                cpu[i].push(run.cpu);
            }
        }
    }
    let base_time = median(times[0].clone());
    let base_mem = median(memory[0].clone()) as f64;
    println!("hactl plan against a live lab, median of {ROUNDS} interleaved runs");
    println!(
        "| workers | nodes | wall time | peak memory | CPU (hactl + ssh clients) | time / 0 workers | memory / 0 workers |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (workers, _)) in labs.iter().enumerate() {
        let t = median(times[i].clone());
        let m = median(memory[i].clone());
        println!(
            "| {workers} | {} | {:.3} s | {:.1} MiB | {:.2} s | {:.2} | {:.2} |",
            workers + 1,
            t,
            m as f64 / 1024.0,
            median(cpu[i].clone()),
            t / base_time,
            m as f64 / base_mem
        );
    }
}
