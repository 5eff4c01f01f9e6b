//! A chat room: every line typed goes to everyone in the same order.
//!
//! ```text
//! cargo run --example chat -- alice 127.0.0.1:7001
//! cargo run --example chat -- bob 127.0.0.1:7002 127.0.0.1:7001   # joins through alice
//! ```

use synchrony::{Config, Event, JoinOptions, Node, Order};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().cloned().unwrap_or_else(|| format!("chat-{}", std::process::id()));
    let listen = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:0".into());
    let mut config = Config::new(name, listen);
    config.contacts = args.iter().skip(2).cloned().collect();
    let node = Node::start(config).await?;
    println!("{} listening on {}; type lines to chat, Ctrl-D to leave", node.id(), node.listen_addr());
    let mut room = node.join("chat", JoinOptions::default()).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(l) => { room.send(Order::Total, l).await?; }
                None => break,
            },
            ev = room.next_event() => match ev {
                Some(Event::View(v)) => {
                    let who: Vec<String> = v.members.iter().map(|m| m.to_string()).collect();
                    println!("* in the room: {}", who.join(", "));
                }
                Some(Event::Message(m)) => {
                    println!("<{}> {}", m.sender(), String::from_utf8_lossy(m.payload()));
                }
                // A chat keeps no history: the state is empty.
                Some(Event::StateRequest(r)) => { let _ = r.provide("").await; }
                Some(_) => {}
                None => break,
            },
        }
    }
    room.leave().await?;
    let _ = node.shutdown().await;
    Ok(())
}
