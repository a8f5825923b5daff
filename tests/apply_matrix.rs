//! Apply's engine on the in-memory fake cluster, exhaustively: the lab's conversion plan
//! without the joins (from the lab-made fresh-1.31 fixture), with every failure the fake can
//! inject at every call of every kind the run makes, and a crash after every journal write
//! followed by a rollback from the journal. Every run ends applied or rolled back, and a
//! rolled-back cluster equals its start byte for byte (files with mode and owner, ConfigMap
//! data); no journal holds a secret.

use std::collections::BTreeMap;
use std::path::Path;

use hactl::apply::driver::{self, MemorySink, Outcome, Seams};
use hactl::apply::journal::{self, Record};
use hactl::apply::steps::{self, Step};
use hactl::observed::ObservedState;
use hactl::plan::Plan;
use hactl::plan::sha256;
use hactl::seams::fake::{FakeCluster, Injected, World};
use hactl::seams::{ConfigMap, FileState, Lease, NodeStatus, Pod};
use hactl::{planner, spec};

/// What stands for the kubeconfigs' private keys in the fake's files; no journal may hold it.
const CLIENT_KEY: &str = "CLIENT-KEY-SECRET-BYTES";

/// The fake cluster's CA key, made once per test run (none is committed); no journal may
/// hold any line of it.
fn ca_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| hactl::pki::rsa_key().unwrap())
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What cluster-info's bootstrapsigner writes, as the fake signs it.
/// A bootstrap token's secret for the fake, made from its id at test time (16 characters of
/// `[a-z0-9]`, as kubeadm's).
fn token_secret(id: &str) -> String {
    sha256(id.as_bytes())["sha256:".len()..][..16].to_string()
}

/// The fixture's cluster as a fake world, and the observation of that world (the fixture with
/// the hashes of the fake's files) from which the plan is made.
fn fixture_world(name: &str) -> (World, ObservedState) {
    let path = root().join(format!("tests/fixtures/observed/{name}.json"));
    let mut observed: ObservedState =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut w = World::default();
    let file = |text: &str, mode| FileState {
        content: text.as_bytes().to_vec(),
        mode,
        uid: 0,
        gid: 0,
    };
    for (node, obs) in observed.nodes.iter_mut() {
        let names: Vec<String> = obs.kubeconfigs.keys().cloned().collect();
        for n in names {
            // The file on the node holds its key; the observation holds it redacted.
            let text = obs.kubeconfigs[&n].replace("REDACTED", CLIENT_KEY);
            obs.kubeconfigs_sha256
                .insert(n.clone(), sha256(text.as_bytes()));
            w.files.insert(
                (node.clone(), format!("/etc/kubernetes/{n}")),
                file(&text, 0o600),
            );
        }
        let advertise = obs
            .apiserver_endpoint
            .as_ref()
            .map(|e| e.advertise_address.clone())
            .unwrap_or_else(|| obs.address.clone());
        if let Some(cert) = obs.apiserver_cert.as_mut() {
            // What the fake's API server checks a name against: the SANs, in the text.
            let sans: Vec<String> = cert.sans.iter().map(ToString::to_string).collect();
            let text = format!(
                "-----BEGIN CERTIFICATE-----\napiserver of {node}\nsans {}\n-----END CERTIFICATE-----\n",
                sans.join(",")
            );
            w.apiservers
                .insert(format!("{advertise}:6443"), node.clone());
            w.served.insert(node.clone(), text.as_bytes().to_vec());
            cert.sha256 = Some(sha256(text.as_bytes()));
            w.files.insert(
                (node.clone(), "/etc/kubernetes/pki/apiserver.crt".into()),
                file(&text, 0o644),
            );
            w.files.insert(
                (node.clone(), "/etc/kubernetes/pki/ca.crt".into()),
                file(
                    "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
                    0o644,
                ),
            );
            w.files.insert(
                (node.clone(), "/etc/kubernetes/pki/ca.key".into()),
                file(ca_key(), 0o600),
            );
        }
    }
    for (key, cm) in observed.api.configmaps.iter_mut() {
        let (ns, name) = key.split_once('/').unwrap();
        if key == "kube-public/cluster-info" {
            let kc = cm.data["kubeconfig"].clone();
            for (k, v) in cm.data.iter_mut() {
                if let Some(id) = k.strip_prefix("jws-kubeconfig-") {
                    let secret = token_secret(id);
                    *v = hactl::jws::compute_detached_signature(&kc, id, &secret);
                    w.tokens.insert(id.to_string(), secret);
                }
            }
        }
        w.configmaps.insert(
            (ns.into(), name.into()),
            ConfigMap {
                namespace: ns.into(),
                name: name.into(),
                resource_version: cm.resource_version.clone(),
                data: cm.data.clone(),
                changed_at: cm.changed_at.clone(),
            },
        );
    }
    for (name, n) in &observed.api.nodes {
        w.nodes.insert(
            name.clone(),
            NodeStatus {
                name: name.clone(),
                ready: n.ready,
                roles: n.roles.clone(),
                kubelet_version: n.kubelet_version.clone(),
            },
        );
        w.leases.insert(
            ("kube-node-lease".into(), name.clone()),
            lease("kube-node-lease", name),
        );
    }
    for c in ["kube-controller-manager", "kube-scheduler"] {
        w.leases
            .insert(("kube-system".into(), c.into()), lease("kube-system", c));
    }
    for (node, p) in &observed.api.kube_proxy_pods {
        w.pods.push(Pod {
            namespace: "kube-system".into(),
            name: p.name.clone(),
            node: node.clone(),
            uid: format!("uid-{}", p.name),
            ready: true,
            created_at: "2026-12-01T00:00:00Z".into(),
            restarts: p.restarts,
            started_at: p.started_at.clone(),
            labels: [("k8s-app".to_string(), "kube-proxy".to_string())].into(),
        });
    }
    (w, observed)
}

fn lease(ns: &str, name: &str) -> Lease {
    Lease {
        namespace: ns.into(),
        name: name.into(),
        holder: Some(name.into()),
        acquire_time: None,
        renew_time: Some("2026-12-01T00:00:00.000000Z".into()),
        duration_secs: Some(40),
        resource_version: "1".into(),
    }
}

/// Files by (node, path) and ConfigMap data by (namespace, name).
type Essence = (
    BTreeMap<(String, String), FileState>,
    BTreeMap<(String, String), BTreeMap<String, String>>,
);

/// What a rollback must give back: every file but apply's backups, every ConfigMap's data.
fn essence(w: &World) -> Essence {
    let files = w
        .files
        .iter()
        .filter(|((_, p), _)| !p.starts_with("/var/lib/hactl/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let cms = w
        .configmaps
        .iter()
        .map(|(k, v)| (k.clone(), v.data.clone()))
        .collect();
    (files, cms)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

struct Case {
    world: World,
    plan: Plan,
    steps: Vec<Step>,
    /// The workers' chains two at a time, as `policy.worker_parallelism = 2` says.
    opts: driver::Options,
}

/// The lab-made fixtures of fresh clusters: the conversion plans the matrix runs.
const FIXTURES: [&str; 3] = ["fresh-1.31", "fresh-1.33", "fresh-1.23-docker"];

fn case(fixture: &str) -> Case {
    let (world, observed) = fixture_world(fixture);
    let text = std::fs::read_to_string(root().join("plans/lab.toml")).unwrap();
    let desired = spec::parse("plans/lab.toml", &text).unwrap();
    let plan = planner::plan(&desired, &observed).unwrap();
    let (steps, joins) = steps::steps(&plan).unwrap();
    let joins: Vec<&str> = joins.iter().map(|c| c.address.as_str()).collect();
    assert_eq!(joins, ["control_plane.cp2", "control_plane.cp3"]);
    let opts = driver::Options {
        workers: desired
            .nodes
            .iter()
            .filter(|n| n.role == spec::Role::Worker)
            .map(|n| n.name.clone())
            .collect(),
        worker_parallelism: 2,
        check_timeout: None,
    };
    Case {
        world,
        plan,
        steps,
        opts,
    }
}

fn run(c: &Case, fake: &FakeCluster, sink: &mut MemorySink) -> Result<Outcome, driver::SinkError> {
    let seams = seams_of(fake);
    // Calls give way as real ones do, so that the workers' chains interleave.
    fake.interleave();
    block_on(driver::apply(
        &c.plan, &c.steps, seams, sink, "run-1", &c.opts,
    ))
}

fn journal_text(records: &[Record]) -> String {
    records.iter().map(Record::line).collect()
}

fn assert_no_secret(text: &str, what: &str) {
    let body = ca_key()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>();
    assert!(body.len() > 10);
    assert!(
        body.iter().all(|l| !text.contains(l)),
        "{what}: the CA key is in the journal"
    );
    assert!(
        !text.contains(CLIENT_KEY),
        "{what}: a client key is in the journal"
    );
}

#[test]
fn the_conversion_applies_and_every_change_is_verified() {
    let c = case("fresh-1.31");
    let fake = FakeCluster::new(c.world.clone());
    let mut sink = MemorySink::default();
    let outcome = run(&c, &fake, &mut sink).unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            steps: c.steps.len()
        }
    );
    let after = fake.world();
    // Every kubeconfig the plan changes now points where the plan says, nothing else moved.
    for step in &c.steps {
        if let steps::StepAction::Change(hactl::plan::Operation::SetKubeconfigServer {
            node,
            path,
            to,
            ..
        }) = &step.action
        {
            let f = &after.files[&(node.clone(), path.clone())];
            let text = String::from_utf8(f.content.clone()).unwrap();
            assert!(text.contains(&format!("server: {to}")), "{path} on {node}");
            assert_eq!(f.mode, 0o600);
        }
    }
    let cm = &after.configmaps[&("kube-system".to_string(), "kube-proxy".to_string())];
    assert!(cm.data["kubeconfig.conf"].contains("https://k8s-api.lab.internal:6443"));
    let text = journal_text(&sink.records);
    assert_no_secret(&text, "applied");
    let j = journal::parse("journal", &text).unwrap();
    assert_eq!(j.finished(), Some("applied"));
    assert!(c.steps.len() >= 15, "{} steps", c.steps.len());
}

#[test]
fn a_failure_at_every_call_ends_applied_or_rolled_back_to_the_start() {
    for fixture in FIXTURES {
        failure_matrix(fixture);
    }
}

fn failure_matrix(fixture: &str) {
    let c = case(fixture);
    let start = essence(&c.world);
    // How many calls of each kind a clean run makes: each is a place to fail.
    let clean = FakeCluster::new(c.world.clone());
    run(&c, &clean, &mut MemorySink::default()).unwrap();
    let counts = clean.counts();
    let (mut runs, mut applied, mut rolled_back) = (0, 0, 0);
    for (&call, &n) in &counts {
        for what in Injected::ALL.into_iter().filter(|f| f.applies_to(call)) {
            for nth in 1..=n {
                let fake = FakeCluster::new(c.world.clone());
                fake.fail(call, nth, what);
                let mut sink = MemorySink::default();
                let outcome = run(&c, &fake, &mut sink).unwrap();
                let label = format!("{fixture}: {what:?} at {call:?} #{nth}");
                runs += 1;
                match &outcome {
                    Outcome::Applied { .. } => applied += 1,
                    Outcome::RolledBack { .. } => {
                        rolled_back += 1;
                        assert_eq!(essence(&fake.world()), start, "{label}: not as it was");
                    }
                    Outcome::Incomplete { .. } => panic!("{label}: {outcome:?}"),
                }
                assert_no_secret(&journal_text(&sink.records), &label);
            }
        }
    }
    println!(
        "failure matrix, {fixture}: {runs} runs ({applied} applied, {rolled_back} rolled back) over {} steps, {} call kinds, {} failure kinds",
        c.steps.len(),
        counts.len(),
        Injected::ALL.len()
    );
    assert!(rolled_back > 0 && applied > 0);
}

#[test]
fn a_check_that_never_holds_rolls_the_files_back_and_says_what_stays_broken() {
    let mut c = case("fresh-1.31");
    let start = essence(&c.world);
    for who in ["w1", "cp1", "w2"] {
        // `--check-timeout 7` for w2's run: its wait is that long.
        let within = if who == "w2" { 7 } else { 120 };
        c.opts.check_timeout = (who == "w2").then(|| std::time::Duration::from_secs(within));
        let fake = FakeCluster::new(c.world.clone());
        fake.never_renews(who);
        let mut sink = MemorySink::default();
        let outcome = run(&c, &fake, &mut sink).unwrap();
        // Every file and ConfigMap is back; the component that never came back is named.
        assert_eq!(essence(&fake.world()), start, "{who}");
        match outcome {
            Outcome::Incomplete {
                failed,
                error,
                not_undone,
                ..
            } => {
                assert_eq!(failed, format!("handler.{who}.kubelet"));
                // The wait says what it waited for and what it saw.
                assert!(
                    error.contains(&format!("did not hold within {within} s; last seen: "))
                        && error.contains(&format!(
                            "Lease kube-node-lease/{who} not renewed since the restart"
                        )),
                    "{error}"
                );
                assert!(!not_undone.is_empty());
                assert!(
                    not_undone.iter().all(|(s, _)| s.starts_with("handler.")),
                    "{not_undone:?}"
                );
            }
            other => panic!("{who}: {other:?}"),
        }
    }
}

/// cluster-info counts as re-signed only when every token's signature verifies for the new
/// kubeconfig (with the token's secret, as `kubeadm join` checks it): a bootstrapsigner that
/// never signs fails the step, and the rollback puts the old kubeconfig back under the old,
/// still valid, signatures.
#[test]
fn cluster_info_never_re_signed_fails_its_check_and_is_rolled_back() {
    let c = case("fresh-1.31");
    let start = essence(&c.world);
    let fake = FakeCluster::new(c.world.clone());
    fake.never_renews(hactl::seams::fake::BOOTSTRAPSIGNER);
    let mut sink = MemorySink::default();
    let outcome = run(&c, &fake, &mut sink).unwrap();
    assert_eq!(essence(&fake.world()), start);
    match outcome {
        Outcome::RolledBack { failed, error, .. } => {
            assert_eq!(failed, "handler.cluster-info.jws");
            assert!(
                error.contains(
                    "last seen: jws-kubeconfig-pt7o1d does not verify for the kubeconfig cluster-info holds"
                ),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_crash_after_every_journal_write_is_rolled_back_from_the_journal() {
    for fixture in FIXTURES {
        crash_matrix(fixture);
    }
}

fn crash_matrix(fixture: &str) {
    let c = case(fixture);
    let start = essence(&c.world);
    let mut clean = MemorySink::default();
    run(&c, &FakeCluster::new(c.world.clone()), &mut clean).unwrap();
    let writes = clean.records.len();
    for n in 1..writes {
        let fake = FakeCluster::new(c.world.clone());
        let mut sink = MemorySink {
            crash_after: Some(n),
            ..MemorySink::default()
        };
        assert!(run(&c, &fake, &mut sink).is_err(), "crash after {n}");
        // What the disk holds: the records written, the last one maybe cut in half.
        let mut text = journal_text(&sink.records);
        if n % 2 == 0 {
            text.push_str("{\"record\":\"step-st");
        }
        let j = journal::parse("journal", &text).unwrap();
        assert_eq!(j.truncated, n % 2 == 0);
        let seams = seams_of(&fake);
        let outcome = block_on(driver::rollback(
            &j,
            &c.steps,
            seams,
            &mut MemorySink::default(),
            &driver::Options::default(),
        ))
        .unwrap();
        assert!(
            matches!(outcome, Outcome::RolledBack { .. }),
            "crash after {n}: {outcome:?}"
        );
        assert_eq!(essence(&fake.world()), start, "crash after {n}");
    }
    println!(
        "crash matrix, {fixture}: {} crash points, each rolled back from its journal",
        writes - 1
    );
}

#[test]
fn ctrl_c_before_any_step_undoes_what_the_run_began() {
    for fixture in FIXTURES {
        let c = case(fixture);
        let start = essence(&c.world);
        let steps = c.steps.len();
        for n in 1..steps {
            let fake = FakeCluster::new(c.world.clone());
            let mut sink = MemorySink {
                interrupt_after: Some(n),
                ..MemorySink::default()
            };
            let outcome = run(&c, &fake, &mut sink).unwrap();
            let Outcome::RolledBack { failed, error, .. } = &outcome else {
                panic!("interrupted after {n} steps: {outcome:?}")
            };
            // A step it would have started next is named; it never began.
            assert!(c.steps.iter().any(|s| &s.id == failed), "{failed}");
            assert!(
                !sink
                    .records
                    .iter()
                    .any(|r| matches!(r, Record::StepStarted { step } if step == failed)),
                "{failed} began"
            );
            assert_eq!(error, "interrupted");
            let begun = sink
                .records
                .iter()
                .filter(|r| matches!(r, Record::StepStarted { .. }))
                .count();
            assert_eq!(begun, n, "interrupted after {n} steps");
            assert_eq!(essence(&fake.world()), start, "interrupted after {n} steps");
        }
    }
}

#[test]
fn a_file_changed_since_the_plan_is_refused_and_one_changed_since_hactl_wrote_it_is_left() {
    let c = case("fresh-1.31");
    let start = essence(&c.world);
    // Changed since the plan: the step fails before it writes, and the run rolls back.
    let fake = FakeCluster::new(c.world.clone());
    fake.edit(|w| {
        let f = w
            .files
            .get_mut(&("w1".to_string(), "/etc/kubernetes/kubelet.conf".to_string()))
            .unwrap();
        f.content.extend_from_slice(b"# edited by hand\n");
    });
    let outcome = run(&c, &fake, &mut MemorySink::default()).unwrap();
    match outcome {
        Outcome::RolledBack { failed, error, .. } => {
            assert_eq!(failed, "kubeconfig.w1.kubelet");
            assert!(error.contains("changed since the plan"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // Changed after hactl wrote it (between the run and a rollback): not undone blindly.
    let fake = FakeCluster::new(c.world.clone());
    let mut sink = MemorySink {
        crash_after: Some(12),
        ..MemorySink::default()
    };
    assert!(run(&c, &fake, &mut sink).is_err());
    let j = journal::parse("journal", &journal_text(&sink.records)).unwrap();
    let touched: Vec<(String, String)> = j
        .records
        .iter()
        .filter_map(|r| match r {
            Record::BackedUp { backup, .. } => Some((backup.node.clone(), backup.path.clone())),
            _ => None,
        })
        .collect();
    let victim = touched.first().expect("a file was changed").clone();
    fake.edit(|w| {
        w.files
            .get_mut(&victim)
            .unwrap()
            .content
            .extend_from_slice(b"# later\n");
    });
    let seams = seams_of(&fake);
    let outcome = block_on(driver::rollback(
        &j,
        &c.steps,
        seams,
        &mut MemorySink::default(),
        &driver::Options::default(),
    ))
    .unwrap();
    match outcome {
        Outcome::Incomplete { not_undone, .. } => {
            assert_eq!(not_undone.len(), 1, "{not_undone:?}");
            assert!(
                not_undone[0].1.contains("changed since hactl wrote it"),
                "{not_undone:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let (files, cms) = essence(&fake.world());
    assert_eq!(cms, start.1);
    for (k, v) in &files {
        if *k != victim {
            assert_eq!(Some(v), start.0.get(k), "{k:?}");
        }
    }
}

/// The journal as the operator's machine keeps it (`.hactl/runs/<id>/`): a run cut off mid
/// record is read back up to its last whole one and rolled back from the file alone.
#[test]
fn a_run_journaled_to_its_directory_rolls_back_from_the_file() {
    let c = case("fresh-1.31");
    let start = essence(&c.world);
    let base = std::env::temp_dir().join(format!("hactl-apply-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let runs = hactl::runs::runs_dir(&base.join("hactl.toml"));
    let id = hactl::runs::new_run_id();
    let dir = hactl::runs::RunDir::create(&runs, &id, &hactl::render::json(&c.plan)).unwrap();
    let fake = FakeCluster::new(c.world.clone());
    // The node stops answering at the fourth write: the run rolls back by itself...
    fake.fail(hactl::seams::fake::Call::WriteFile, 4, Injected::LostBefore);
    let seams = seams_of(&fake);
    let mut sink = dir.sink().unwrap();
    let outcome = block_on(driver::apply(
        &c.plan, &c.steps, seams, &mut sink, &id, &c.opts,
    ))
    .unwrap();
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?}");
    assert_eq!(essence(&fake.world()), start);
    let text = std::fs::read_to_string(dir.journal_path()).unwrap();
    assert_no_secret(&text, "the journal file");

    // ...and a run killed mid-record is rolled back from what its file holds.
    let fake = FakeCluster::new(c.world.clone());
    let id2 = format!("{id}-2");
    let dir2 = hactl::runs::RunDir::create(&runs, &id2, &hactl::render::json(&c.plan)).unwrap();
    let mut memory = MemorySink {
        crash_after: Some(20),
        ..MemorySink::default()
    };
    assert!(run(&c, &fake, &mut memory).is_err());
    let mut lines = journal_text(&memory.records);
    lines.push_str("{\"record\":\"step-done\",\"st");
    std::fs::write(dir2.journal_path(), lines).unwrap();
    let reopened = hactl::runs::RunDir::open(&runs, None).unwrap();
    assert_eq!(reopened.id, id2, "the latest run");
    let j = reopened.journal().unwrap();
    assert!(j.truncated && j.finished().is_none());
    let mut sink = reopened.sink().unwrap();
    let outcome = block_on(driver::rollback(
        &j,
        &c.steps,
        seams_of(&fake),
        &mut sink,
        &c.opts,
    ))
    .unwrap();
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?}");
    assert_eq!(essence(&fake.world()), start);
    // The file reads back whole, the rollback's records after the run's.
    let j = reopened.journal().unwrap();
    assert!(!j.truncated);
    assert_eq!(j.finished(), Some("rolled-back"));
    std::fs::remove_dir_all(&base).unwrap();
}

fn seams_of(fake: &FakeCluster) -> Seams<'_, FakeCluster, FakeCluster, FakeCluster, FakeCluster> {
    Seams {
        node: fake,
        api: fake,
        clock: fake,
        signer: fake,
    }
}

/// A run that completed is rolled back from its journal too: every change undone, every
/// handler run again, the cluster as it was.
#[test]
fn a_completed_run_rolls_back_from_its_journal() {
    let c = case("fresh-1.31");
    let start = essence(&c.world);
    let fake = FakeCluster::new(c.world.clone());
    let mut sink = MemorySink::default();
    assert!(matches!(
        run(&c, &fake, &mut sink).unwrap(),
        Outcome::Applied { .. }
    ));
    assert_ne!(essence(&fake.world()), start);
    let j = journal::parse("journal", &journal_text(&sink.records)).unwrap();
    let mut undo = MemorySink::default();
    let outcome = block_on(driver::rollback(
        &j,
        &c.steps,
        seams_of(&fake),
        &mut undo,
        &c.opts,
    ))
    .unwrap();
    match outcome {
        Outcome::RolledBack { undone, error, .. } => {
            assert_eq!(undone.len(), c.steps.len());
            assert_eq!(error, "the run had ended (applied); rolled back on request");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(essence(&fake.world()), start);
}

/// The workers' chains run side by side, `worker_parallelism` at a time: with 2, w2's steps
/// start before w1's end; with 1, every w1 call comes before the first w2 call.
#[test]
fn worker_chains_run_side_by_side_as_many_at_once_as_policy_says() {
    let mut c = case("fresh-1.31");
    let segments = driver::segments(&c.steps, &c.opts);
    let chains: Vec<Vec<&str>> = segments
        .iter()
        .find(|s| s.len() > 1)
        .expect("a segment of worker chains")
        .iter()
        .map(|chain| chain.iter().map(|s| s.id.as_str()).collect())
        .collect();
    assert_eq!(
        chains,
        [
            vec![
                "kubeconfig.w1.kubelet",
                "handler.w1.kubelet",
                "handler.w1.kube-proxy"
            ],
            vec![
                "kubeconfig.w2.kubelet",
                "handler.w2.kubelet",
                "handler.w2.kube-proxy"
            ],
        ]
    );
    let order = |c: &Case| {
        let fake = FakeCluster::new(c.world.clone());
        assert!(matches!(
            run(c, &fake, &mut MemorySink::default()).unwrap(),
            Outcome::Applied { .. }
        ));
        let log = fake.log();
        let first = |node: &str| {
            log.iter()
                .position(|l| l.contains(&format!(" {node} ")))
                .unwrap()
        };
        let last = |node: &str| {
            log.iter()
                .rposition(|l| l.contains(&format!(" {node} ")))
                .unwrap()
        };
        (first("w2") < last("w1"), last("w1") < first("w2"))
    };
    assert_eq!(order(&c), (true, false), "two at a time: interleaved");
    c.opts.worker_parallelism = 1;
    assert_eq!(order(&c), (false, true), "one at a time: w1, then w2");
}

/// A static pod's restart (containerd's `crictl stopp`/`rmp`, docker's `kill`) is checked by its
/// leader Lease coming back with a new holder; one that never comes back fails the step.
#[test]
fn a_static_pod_restart_is_checked_by_a_new_leader() {
    use hactl::kubeadm::Component;
    use hactl::plan::{Handler, HandlerAction, HandlerCheck};
    let c = case("fresh-1.31");
    for runtime in ["containerd", "docker"] {
        for stuck in [false, true] {
            let handler = Handler {
                id: "handler.cp1.kube-scheduler".into(),
                node: Some("cp1".into()),
                action: HandlerAction::RestartStaticPod {
                    component: Component::KubeScheduler,
                    runtime: runtime.into(),
                },
                description: "restart kube-scheduler on cp1".into(),
                verify: "kube-scheduler's leader Lease is renewed".into(),
                check: Some(HandlerCheck::LeaderLeaseRenewed {
                    lease: "kube-scheduler".into(),
                }),
                triggered_by: vec!["kubeconfig.cp1.scheduler".into()],
                runs_after: "kubeconfig.cp1.scheduler".into(),
            };
            let steps = [Step {
                id: handler.id.clone(),
                action: steps::StepAction::Handler(handler),
            }];
            let fake = FakeCluster::new(c.world.clone());
            if stuck {
                fake.never_renews("kube-scheduler");
            }
            let outcome = block_on(driver::apply(
                &c.plan,
                &steps,
                seams_of(&fake),
                &mut MemorySink::default(),
                "run-1",
                &c.opts,
            ))
            .unwrap();
            let ran: Vec<String> = fake
                .log()
                .into_iter()
                .filter(|l| l.starts_with("Run"))
                .collect();
            let kill = if runtime == "docker" {
                "Run cp1 docker kill sandbox-kube-scheduler"
            } else {
                "Run cp1 crictl stopp sandbox-kube-scheduler"
            };
            assert!(ran.iter().any(|l| l == kill), "{runtime}: {ran:?}");
            let holder = fake.world().leases
                [&("kube-system".to_string(), "kube-scheduler".to_string())]
                .holder
                .clone();
            match (stuck, outcome) {
                (false, Outcome::Applied { .. }) => {
                    assert_ne!(holder.as_deref(), Some("kube-scheduler"), "a new leader")
                }
                (true, Outcome::Incomplete { failed, .. }) => {
                    assert_eq!(failed, "handler.cp1.kube-scheduler")
                }
                (stuck, other) => panic!("{runtime}, stuck {stuck}: {other:?}"),
            }
        }
    }
}

/// The API server rereads its new certificate and is not restarted; one that does not is
/// restarted after the reload window, and then serves it.
#[test]
fn a_served_certificate_is_waited_for_and_the_api_server_restarted_only_if_it_does_not_reload() {
    let c = case("fresh-1.31");
    for reloads in [true, false] {
        let fake = FakeCluster::new(c.world.clone());
        if !reloads {
            fake.never_renews("kube-apiserver");
        }
        let outcome = run(&c, &fake, &mut MemorySink::default()).unwrap();
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        let restarted = fake
            .log()
            .iter()
            .any(|l| l == "Run cp1 crictl stopp sandbox-kube-apiserver");
        assert_eq!(restarted, !reloads);
        let served = String::from_utf8(fake.world().served["cp1"].clone()).unwrap();
        assert!(served.contains("DNS:k8s-api.lab.internal"), "{served}");
    }
}
