//! The store: what was written is read back after a reopen and after a SIGKILL in the
//! middle of writing; checkpoints compact the log atomically; a file that is not this node's
//! store is refused and left as it was.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;
use synchrony_engine::{GroupName, GroupView, ProcessId, ViewId};
use synchrony_storage::{OpenError, Recovered, Store};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("synchrony-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn written_data_and_views_come_back_after_reopening() {
    let d = dir("reopen");
    let g = GroupName::new("g");
    let view = GroupView { id: ViewId(7), members: vec![ProcessId::new("n1", 3), ProcessId::new("n2", 1)] };
    {
        let s = Store::open(&d, "n1").expect("opens");
        s.record_view(&g, &view).expect("writes");
        s.append_batch(&g, &[(1, b"a"), (2, b"b"), (3, b"c")]).expect("writes");
        s.checkpoint(&g, 2, b"ab").expect("writes");
        s.append_batch(&g, &[(3, b"c")]).expect("writes");
    }
    let s = Store::open(&d, "n1").expect("reopens");
    assert_eq!(s.views().expect("reads").get(&g), Some(&view));
    // The checkpoint replaced the whole log: the 3 there is the one appended after it.
    assert_eq!(
        s.load(&g).expect("reads"),
        Recovered { checkpoint: Some((2, b"ab".to_vec())), log: vec![(3, b"c".to_vec())] }
    );
    assert_eq!(s.load(&GroupName::new("other")).expect("reads"), Recovered::default());
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_that_is_not_a_store_is_refused_and_left_untouched() {
    let d = dir("foreign");
    std::fs::create_dir_all(&d).expect("dir");
    let file = d.join("synchrony.redb");
    let junk: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &junk).expect("writes");
    let err = Store::open(&d, "n1").expect_err("refused");
    assert!(matches!(err, OpenError::Damaged { .. }), "{err}");
    assert_eq!(std::fs::read(&file).expect("reads"), junk, "the file was changed");
    // A redb database of something else.
    std::fs::remove_file(&file).expect("removes");
    {
        let db = redb::Database::create(&file).expect("creates");
        let tx = db.begin_write().expect("tx");
        tx.open_table(redb::TableDefinition::<&str, &str>::new("someone-else"))
            .expect("table")
            .insert("k", "v")
            .expect("insert");
        tx.commit().expect("commits");
    }
    let before = std::fs::read(&file).expect("reads");
    let err = Store::open(&d, "n1").expect_err("refused");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&file).expect("reads"), before, "the file was changed");
    // Another node's store.
    std::fs::remove_file(&file).expect("removes");
    drop(Store::open(&d, "n2").expect("opens"));
    let err = Store::open(&d, "n1").expect_err("refused");
    assert!(matches!(err, OpenError::OtherNode { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[derive(Clone, Debug)]
enum Op {
    Append(u8, u8),
    Checkpoint(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, any::<u8>()).prop_map(|(g, b)| Op::Append(g, b)),
        2 => (0u8..3).prop_map(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The store against a model: logs, checkpoints and reopening in any order.
    #[test]
    fn the_store_matches_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let d = dir("model");
        let mut s = Store::open(&d, "n1").expect("opens");
        let mut model: BTreeMap<u8, Recovered> = BTreeMap::new();
        let mut next: BTreeMap<u8, u64> = BTreeMap::new();
        for o in ops {
            match o {
                Op::Append(g, b) => {
                    let seq = next.entry(g).or_insert(0);
                    *seq += 1;
                    s.append(&GroupName::new(format!("g{g}")), *seq, &[b]).expect("appends");
                    model.entry(g).or_default().log.push((*seq, vec![b]));
                }
                Op::Checkpoint(g) => {
                    let seq = next.get(&g).copied().unwrap_or(0);
                    let m = model.entry(g).or_default();
                    let state: Vec<u8> = m.log.iter().flat_map(|(_, b)| b.clone()).collect();
                    s.checkpoint(&GroupName::new(format!("g{g}")), seq, &state).expect("checkpoints");
                    m.checkpoint = Some((seq, state));
                    m.log.clear();
                }
                Op::Reopen => {
                    drop(s);
                    s = Store::open(&d, "n1").expect("reopens");
                }
            }
        }
        for g in 0..3u8 {
            let got = s.load(&GroupName::new(format!("g{g}"))).expect("loads");
            prop_assert_eq!(got, model.get(&g).cloned().unwrap_or_default());
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Run by `survives_sigkill_while_writing` in a child process: appends and checkpoints
/// until killed, printing each sequence number once its write returned.
#[test]
fn child_writer() {
    let Ok(d) = std::env::var("SYNCHRONY_STORE_CHILD") else { return };
    let s = Store::open(std::path::Path::new(&d), "n1").expect("opens");
    let g = GroupName::new("g");
    let payload = vec![7u8; 512];
    for seq in 1.. {
        s.append(&g, seq, &payload).expect("appends");
        if seq % 50 == 0 {
            s.checkpoint(&g, seq, &seq.to_le_bytes()).expect("checkpoints");
        }
        println!("acked {seq}");
    }
}

#[test]
fn survives_sigkill_while_writing() {
    let d = dir("sigkill");
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "child_writer", "--nocapture", "--test-threads", "1"])
            .env("SYNCHRONY_STORE_CHILD", &d)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starts");
        let out = child.stdout.take().expect("stdout");
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let a = acked.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("acked ").and_then(|n| n.parse().ok()) {
                    a.store(n, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(400 + round * 170));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        reader.join().expect("reader");
        let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
        assert!(acked > 0, "the child wrote nothing");
        let s = Store::open(&d, "n1").expect("reopens after the kill");
        let r = s.load(&GroupName::new("g")).expect("loads");
        let covered = r.checkpoint.as_ref().map_or(0, |c| c.0);
        let last = r.log.last().map_or(covered, |l| l.0);
        assert!(last >= acked, "acknowledged write {acked} lost (store ends at {last})");
        let seqs: Vec<u64> = r.log.iter().map(|l| l.0).collect();
        assert_eq!(seqs, (covered + 1..=last).collect::<Vec<_>>(), "a gap or a torn log");
        if let Some((seq, state)) = &r.checkpoint {
            assert_eq!(state, &seq.to_le_bytes().to_vec(), "a torn checkpoint");
        }
        // The next child starts after what is there (seq numbers restart: a fresh log).
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Fault injection cuts one write of the child's store in half and aborts it: in the middle
/// of its 37th log append, and of its 2nd checkpoint. The store must open again and hold
/// exactly what committed before.
#[test]
fn survives_a_write_cut_in_half() {
    use std::os::unix::process::ExitStatusExt;
    // (what to cut, the last seq committed, the checkpoint then)
    for (cut, last, covered) in [("append:37", 36, 0), ("checkpoint:2", 100, 50)] {
        let d = dir(&format!("cut-{}", cut.replace(':', "-")));
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "child_writer", "--nocapture", "--test-threads", "1"])
            .env("SYNCHRONY_STORE_CHILD", &d)
            .env(synchrony_storage::CRASH_ENV, cut)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("runs");
        assert_eq!(status.signal(), Some(6), "{cut}: the child was to abort in its write ({status})");
        let s = Store::open(&d, "n1").expect("reopens after the torn write");
        let r = s.load(&GroupName::new("g")).expect("loads");
        assert_eq!(r.checkpoint.as_ref().map_or(0, |c| c.0), covered, "{cut}: checkpoint");
        if let Some((seq, state)) = &r.checkpoint {
            assert_eq!(state, &seq.to_le_bytes().to_vec(), "{cut}: a torn checkpoint");
        }
        let seqs: Vec<u64> = r.log.iter().map(|l| l.0).collect();
        assert_eq!(seqs, (covered + 1..=last).collect::<Vec<_>>(), "{cut}: the log");
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }
}
