//! The live-plan benchmark: `hactl plan` against labs of 1 control-plane node and 0, 10 and 50
//! workers, beside the floor for reading those nodes (plain OpenSSH: one `ssh` per node, all at
//! once, each running observation's node script, with the same ssh config and key exchange),
//! reported as wall times, hactl's peak memory and CPU, the machine's busy CPU during each
//! run, and hactl's ratio to the floor.
//!
//! `cargo bench --bench plan` (root, the lab's packages; see README). One lab is up at a time,
//! at a cluster's pace (`lab up --pace cluster`); in each round the floor and hactl run one
//! after the other under both ssh settings, which of the two goes first alternating by round;
//! the figures are medians. Not a test: nothing here fails on a slow machine.

#[path = "../tests/lab_support/mod.rs"]
mod lab_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_support::{HACTL, Lab, plan};

/// Workers per lab; each lab gets its own loopback net (127.0.<net>.x).
const SIZES: [(usize, u8); 3] = [(0, 40), (10, 41), (50, 42)];
/// Measured rounds per lab (after a warm-up round); `HACTL_BENCH_ROUNDS` sets another count.
const ROUNDS: usize = 11;

/// One run of `hactl plan`.
struct Run {
    wall: Duration,
    /// Peak resident memory of the hactl process, KiB.
    peak_kib: i64,
    /// User + system CPU of hactl and the children it waited for (each node's `ssh` master
    /// until it backgrounds itself, i.e. the client side of every handshake), seconds.
    cpu: f64,
    /// The machine's busy CPU during the run (hactl, the lab's sshds, etcd, …).
    machine: f64,
    code: i32,
}

/// The machine's busy CPU time so far, all cores (`/proc/stat`: everything but idle and iowait):
/// read around a run, it shows whether the run kept both cores busy or waited.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().expect("a tick count"))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks.iter().sum::<f64>() - ticks[3] - ticks[4]) / hz
}

/// Runs `hactl plan FILE` once.
fn run_plan(file: &std::path::Path) -> Run {
    let busy = machine_busy();
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
    let machine = machine_busy() - busy;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    std::mem::forget(child);
    Run {
        wall: elapsed,
        peak_kib: usage.ru_maxrss,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        machine,
        code,
    }
}

/// The floor: every node read at once by plain OpenSSH, one `ssh` per node (a full handshake,
/// as hactl's master connection makes), each running observation's node script sent on stdin.
fn run_floor(ssh_config: &std::path::Path, nodes: &[String]) -> Floor {
    let script = hactl::readings::node::node_script();
    let clients = children_cpu();
    let busy = machine_busy();
    let started = Instant::now();
    let children: Vec<_> = nodes
        .iter()
        .map(|node| {
            let mut child = Command::new("ssh")
                .arg("-F")
                .arg(ssh_config)
                .args(["-o", "BatchMode=yes", node, "sh", "-s"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start ssh");
            let mut stdin = child.stdin.take().expect("ssh's stdin");
            stdin.write_all(script.as_bytes()).expect("send the script");
            (node, child)
        })
        .collect();
    for (node, mut child) in children {
        let status = child.wait().expect("wait for ssh");
        assert!(status.success(), "ssh {node} exited {status}");
    }
    Floor {
        wall: started.elapsed(),
        machine: machine_busy() - busy,
        clients: children_cpu() - clients,
    }
}

/// One run of the floor.
struct Floor {
    wall: Duration,
    /// The machine's busy CPU during the run.
    machine: f64,
    /// User + system CPU of its `ssh` clients.
    clients: f64,
}

/// User + system CPU of every child this process has waited for, seconds.
fn children_cpu() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live local.
    let got = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(got, 0, "getrusage failed");
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A rusage time, in seconds.
fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

/// A distribution-free interval for the median of `v`, at least 95 % (the order statistics
/// x(k) and x(n+1-k), k the largest with P(Binomial(n, 1/2) < k) <= 2.5 %): what a median of
/// this many rounds may say. `None` below 6 values, where no such k exists.
fn median_interval(mut v: Vec<f64>) -> Option<(f64, f64)> {
    let n = v.len();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    // P(B <= i) for i = 0, 1, ..., in f64: C(n, i) / 2^n summed.
    let (mut below, mut choose, mut k) = (0.0, 1.0, 0);
    for i in 0..n {
        below += choose / 2f64.powi(n as i32);
        if below > 0.025 {
            break;
        }
        k = i + 1;
        choose = choose * (n - i) as f64 / (i + 1) as f64;
    }
    (k > 0).then(|| (v[k - 1], v[n - k]))
}

/// The measured runs of one lab under one SSH setting.
#[derive(Default)]
struct Series {
    wall: Vec<f64>,
    floor: Vec<f64>,
    machine: Vec<f64>,
    floor_machine: Vec<f64>,
    floor_clients: Vec<f64>,
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

/// The lab's hactl.toml and ssh config, or copies whose ssh config first sets
/// `KexAlgorithms kex`.
fn plan_file(lab: &Lab, kex: Option<&str>) -> (std::path::PathBuf, std::path::PathBuf) {
    let file = lab.dir.join("hactl.toml");
    let Some(kex) = kex else {
        return (file, lab.dir.join("ssh_config"));
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
    (copy, kex_config)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs this without --bench: nothing to measure then.
        return;
    }
    // HACTL_BENCH_WORKERS=50 measures only that lab (for quick comparisons while working).
    let only: Option<usize> = std::env::var("HACTL_BENCH_WORKERS")
        .ok()
        .map(|w| w.parse().expect("HACTL_BENCH_WORKERS is a worker count"));
    // More rounds narrow the medians (README's benchmark says by how much rounds vary).
    let rounds: usize = std::env::var("HACTL_BENCH_ROUNDS")
        .ok()
        .map_or(ROUNDS, |r| {
            r.parse()
                .ok()
                .filter(|r| *r > 0)
                .expect("HACTL_BENCH_ROUNDS is a positive count")
        });
    let sizes: Vec<(usize, u8)> = SIZES
        .iter()
        .copied()
        .filter(|(workers, _)| only.is_none_or(|o| o == *workers))
        .collect();
    let mut series: Vec<Vec<Series>> = SETTINGS
        .iter()
        .map(|_| sizes.iter().map(|_| Series::default()).collect())
        .collect();
    // One lab up at a time: another lab's kubelets, API server and etcd would load the same
    // two cores while this one is measured.
    for (i, &(workers, net)) in sizes.iter().enumerate() {
        eprintln!("lab up: 1 control-plane node, {workers} workers (127.0.{net}.x)");
        // At a cluster's pace: the lab's own load at the test pace weighs unevenly on the
        // floor and on hactl (README's benchmark).
        let lab = Lab::up(
            &format!("bench{net}"),
            &plan(net, 1, workers),
            &["--pace", "cluster"],
        );
        let files: Vec<_> = SETTINGS
            .iter()
            .map(|(_, kex)| plan_file(&lab, *kex))
            .collect();
        let nodes: Vec<String> = std::iter::once("cp1".to_string())
            .chain((1..=workers).map(|w| format!("w{w}")))
            .collect();
        for round in 0..=rounds {
            for (s, (file, ssh_config)) in files.iter().enumerate() {
                // The floor and hactl one after the other, which first alternating by round,
                // so that the machine speeding up or slowing down (it is a VM) favours neither.
                let floor_first = round % 2 == 0;
                let (floor, run) = if floor_first {
                    let floor = run_floor(ssh_config, &nodes);
                    (floor, run_plan(file))
                } else {
                    let run = run_plan(file);
                    (run_floor(ssh_config, &nodes), run)
                };
                assert!(
                    run.code == 0 || run.code == 2,
                    "hactl plan against the {workers}-worker lab exited {}",
                    run.code
                );
                eprintln!(
                    "round {round}, {workers} workers, {}: floor {:.3} s, hactl {:.3} s ({} first)",
                    SETTINGS[s].0,
                    floor.wall.as_secs_f64(),
                    run.wall.as_secs_f64(),
                    if floor_first { "floor" } else { "hactl" }
                );
                // Round 0 warms caches (binary, page cache, sshd's first fork); not counted.
                if round > 0 {
                    let series = &mut series[s][i];
                    series.wall.push(run.wall.as_secs_f64());
                    series.floor.push(floor.wall.as_secs_f64());
                    series.peak_kib.push(run.peak_kib);
                    series.cpu.push(run.cpu);
                    series.machine.push(run.machine);
                    series.floor_machine.push(floor.machine);
                    series.floor_clients.push(floor.clients);
                }
            }
        }
        drop(lab);
    }
    println!(
        "hactl plan against a live lab beside the floor (plain OpenSSH reading every node at once), median of {rounds} rounds"
    );
    println!(
        "| ssh | workers | nodes | hactl plan | floor | hactl / floor | its 95 % interval | hactl's peak memory | client CPU, hactl + ssh / floor's ssh | machine CPU, hactl / floor |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (s, (name, _)) in SETTINGS.iter().enumerate() {
        for (i, (workers, _)) in sizes.iter().enumerate() {
            let series = &series[s][i];
            let t = median(series.wall.clone());
            let f = median(series.floor.clone());
            // The ratio of each round's pair, then its median: each pair ran side by side.
            let ratios: Vec<f64> = series
                .wall
                .iter()
                .zip(&series.floor)
                .map(|(w, f)| w / f)
                .collect();
            let ratio = median(ratios.clone());
            let interval = median_interval(ratios).map_or("(too few rounds)".into(), |(lo, hi)| {
                format!("{lo:.3}-{hi:.3}")
            });
            println!(
                "| {name} | {workers} | {} | {t:.3} s | {f:.3} s | {ratio:.3} | {interval} | {:.1} MiB | {:.2} s / {:.2} s | {:.2} s / {:.2} s |",
                workers + 1,
                median(series.peak_kib.clone()) as f64 / 1024.0,
                median(series.cpu.clone()),
                median(series.floor_clients.clone()),
                median(series.machine.clone()),
                median(series.floor_machine.clone()),
            );
        }
    }
}
