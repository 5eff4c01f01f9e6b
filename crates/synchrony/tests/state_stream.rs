//! A state written and read as a stream: the provider writes it in parts while its group
//! goes on, each write waiting while the joiner has not fetched enough; the joiner reads
//! the parts as they arrive, and fetches more only as it reads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use synchrony::{Config, Event, JoinOptions, Node, Order, StatePart};
use tokio::time::timeout;

const PART: usize = 256 * 1024;
const PARTS: usize = 64;
const WINDOW: usize = 1 << 20;

fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

fn part(k: usize) -> Vec<u8> {
    (k * PART..(k + 1) * PART).map(byte_at).collect()
}

async fn node(name: &str, contact: Option<&Node>) -> Node {
    let mut config = Config::new(name, "127.0.0.1:0");
    config.set_timeouts(Duration::from_millis(50), Duration::from_millis(500));
    config.engine.state_window_bytes = WINDOW;
    config.contacts.extend(contact.map(|n| n.listen_addr().to_string()));
    Node::start(config).await.expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_written_in_parts_while_the_group_goes_on_is_read_in_parts() {
    timeout(Duration::from_secs(60), async {
        let a = node("p1", None).await;
        let b = node("p2", Some(&a)).await;
        let mut ga = a.join("big", JoinOptions::default()).await.expect("joins");
        let sender = ga.sender();
        let written = Arc::new(AtomicUsize::new(0));
        let (half_tx, half_rx) = tokio::sync::oneshot::channel::<()>();
        let writes = written.clone();
        // The provider: the state request, then its parts from a task of their own while
        // its group's events go on; it waits at half way until it has seen a message sent
        // after the request delivered.
        let provider = tokio::spawn(async move {
            let request = loop {
                match ga.next_event().await.expect("event") {
                    Event::StateRequest(r) => break r,
                    _ => continue,
                }
            };
            let mut w = request.stream().await.expect("running");
            let writer = tokio::spawn(async move {
                let mut half = Some(half_rx);
                for k in 0..PARTS {
                    if k == PARTS / 2 {
                        half.take().expect("once").await.expect("the message came");
                    }
                    w.write(part(k)).await.expect("a joiner needs it");
                    writes.fetch_add(1, Ordering::SeqCst);
                }
                w.finish().await.expect("finished");
            });
            sender.send(Order::Total, "during").await.expect("sends");
            loop {
                if let Event::Message(m) = ga.next_event().await.expect("event") {
                    assert_eq!(&m.payload()[..], b"during");
                    break;
                }
            }
            let _ = half_tx.send(());
            writer.await.expect("the writer");
            ga
        });
        let mut gb = b.join("big", JoinOptions::default().stream_state()).await.expect("joins");
        let mut state = gb.state_stream().expect("asked for a stream");
        // While the joiner reads nothing, the provider's writes wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = written.load(Ordering::SeqCst);
        assert!(before * PART <= 4 * WINDOW, "{before} parts written before the joiner read anything");
        let (mut at, mut restarts) = (0usize, 0);
        while let Some(p) = state.next().await {
            match p {
                StatePart::Data(bytes) => {
                    assert!(bytes.iter().enumerate().all(|(k, b)| *b == byte_at(at + k)), "bytes at {at} as written");
                    at += bytes.len();
                }
                StatePart::Restart => {
                    at = 0;
                    restarts += 1;
                }
            }
        }
        assert!(state.is_complete() && at == PART * PARTS && restarts == 0, "{at} bytes, {restarts} restarts");
        let first = loop {
            match gb.next_event().await.expect("event") {
                Event::View(_) => {}
                other => break other,
            }
        };
        assert!(matches!(first, Event::StateStreamed { len } if len == (PART * PARTS) as u64), "{first:?}");
        loop {
            match gb.next_event().await.expect("event") {
                Event::Message(m) => break assert_eq!(&m.payload()[..], b"during"),
                Event::View(_) => {}
                other => panic!("{other:?} before the message"),
            }
        }
        let _ga = provider.await.expect("the provider");
        for n in [&a, &b] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}

/// A founder's stream ends at once, empty and complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_founders_state_stream_ends_at_once() {
    timeout(Duration::from_secs(30), async {
        let a = node("f1", None).await;
        let mut g = a.join("new", JoinOptions::default().stream_state()).await.expect("joins");
        let mut state = g.state_stream().expect("asked for a stream");
        assert_eq!(state.next().await, None);
        assert!(state.is_complete());
        let _ = a.shutdown().await;
    })
    .await
    .expect("in time");
}

/// The writer is a `tokio::io::AsyncWrite`: a state copied into it (`tokio::io::copy`,
/// then `shutdown`) arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_copied_into_the_writer_arrives_whole() {
    use tokio::io::AsyncWriteExt;
    timeout(Duration::from_secs(60), async {
        let a = node("c1", None).await;
        let b = node("c2", Some(&a)).await;
        let mut ga = a.join("copied", JoinOptions::default()).await.expect("joins");
        let data: Vec<u8> = (0..3 * PART + 12345).map(byte_at).collect();
        let written = data.clone();
        let provider = tokio::spawn(async move {
            let request = loop {
                if let Event::StateRequest(r) = ga.next_event().await.expect("event") {
                    break r;
                }
            };
            let mut w = request.stream().await.expect("running");
            tokio::io::copy(&mut &written[..], &mut w).await.expect("copied");
            w.shutdown().await.expect("finished");
            ga
        });
        let mut gb = b.join("copied", JoinOptions::default().stream_state()).await.expect("joins");
        let mut state = gb.state_stream().expect("asked for a stream");
        let mut got = Vec::new();
        while let Some(p) = state.next().await {
            match p {
                StatePart::Data(bytes) => got.extend_from_slice(&bytes),
                StatePart::Restart => got.clear(),
            }
        }
        assert!(state.is_complete() && got == data, "{} of {} bytes", got.len(), data.len());
        let _ga = provider.await.expect("the provider");
        for n in [&a, &b] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}
