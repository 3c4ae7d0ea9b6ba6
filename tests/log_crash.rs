//! The staging log under SIGKILL: after each restart it is a clean prefix of what was
//! acknowledged — no torn transaction, positions never move back.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use weir::log::torture::{schema, txn, txn_len};
use weir::log::{LogOptions, StagingLog};
use weir_api::{DatagenPosition, Entry, SourcePosition};

/// Reads the log from `from` to its head and checks every transaction against the
/// deterministic workload. Returns (transactions, events) at the head.
fn verify(
    log: &std::sync::Arc<StagingLog>,
    from_seq: u64,
    mut txns: u64,
    mut events: u64,
) -> (u64, u64, u64) {
    let head = log.head();
    let mut reader = log.reader();
    let mut next = from_seq;
    let mut pending: Vec<weir_api::ChangeEvent> = Vec::new();
    while next <= head.seq {
        let batch = reader.read(next, head.seq, 10_000).unwrap();
        for e in &batch.entries {
            match &e.entry {
                Entry::Schema(s) => {
                    assert!(s.same_shape(&schema()));
                    assert!(pending.is_empty(), "schema inside a transaction");
                }
                Entry::Change(ev, s) => {
                    assert_eq!(s.version, 1);
                    pending.push(ev.clone());
                }
                Entry::Commit(c) => {
                    let (expected, commit) = txn(txns, events);
                    assert_eq!(
                        pending.len() as u64,
                        txn_len(txns),
                        "transaction {txns} is torn"
                    );
                    assert!(pending == expected, "transaction {txns} differs");
                    assert_eq!(c, &commit, "commit of transaction {txns} differs");
                    pending.clear();
                    events += txn_len(txns);
                    txns += 1;
                }
            }
        }
        next = batch.entries.last().unwrap().seq + 1;
    }
    assert!(
        pending.is_empty(),
        "records after the last commit are visible"
    );
    assert_eq!(head.txns, txns);
    assert_eq!(
        head.position,
        if txns == 0 {
            None
        } else {
            Some(SourcePosition::Datagen(DatagenPosition { events }))
        }
    );
    (head.seq + 1, txns, events)
}

#[test]
fn sigkill_at_random_moments_leaves_a_clean_prefix_of_what_was_acknowledged() {
    let dir = TempDir::new("log-crash");
    let log_dir = dir.path().join("log");
    let mut rng = Rng(20261121);
    let (mut next_seq, mut txns, mut events) = (1, 0, 0);
    let mut kills = 0;
    for round in 0..60 {
        let mut child = weir()
            .arg("__log-torture")
            .arg(&log_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it append for a random while: sometimes not even one commit.
        let wait = Duration::from_millis(rng.range(5, 400));
        std::thread::sleep(wait);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_some() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("round {round}: torture exited by itself: {status:?} {err}");
        }
        kills += 1;
        reader.join().unwrap();
        let acked: Vec<(u64, u64)> = rx
            .try_iter()
            .map(|l| {
                let mut parts = l
                    .split_whitespace()
                    .skip(1)
                    .map(|p| p.parse::<u64>().unwrap());
                (parts.next().unwrap(), parts.next().unwrap())
            })
            .collect();
        let last_acked = acked.last().copied().unwrap_or((txns, events));
        assert!(
            acked.windows(2).all(|w| w[0] <= w[1]),
            "acknowledged positions moved back"
        );

        let log = StagingLog::open(&log_dir, LogOptions::default()).unwrap();
        let before = (txns, events);
        (next_seq, txns, events) = verify(&log, next_seq, txns, events);
        assert!(
            (txns, events) >= before,
            "round {round}: the log moved back from {before:?} to {:?}",
            (txns, events)
        );
        assert!(
            (txns, events) >= last_acked,
            "round {round}: acknowledged {last_acked:?} but the log holds only {:?}",
            (txns, events)
        );
    }
    assert!(kills >= 50);
    assert!(
        txns > 100,
        "the workload made too little progress to prove anything ({txns} transactions)"
    );
    // A last full pass over everything.
    let log = StagingLog::open(&log_dir, LogOptions::default()).unwrap();
    let (_, all_txns, _) = verify(&log, 1, 0, 0);
    assert_eq!(all_txns, txns);
    eprintln!("{kills} kills, {txns} transactions, {events} events verified");
}
