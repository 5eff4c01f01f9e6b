//! The node's metrics, through the `metrics` facade; with `Config::metrics` set, a
//! Prometheus scrape endpoint serves them.
//!
//! Counters mirror the engine's and the transport's counts (published on the driver's
//! housekeeping tick); histograms time flushes, state transfers (join to state loaded) and
//! this node's own messages from send to delivery here.

use crate::status::NetCounters;
use std::net::SocketAddr;
use synchrony_engine::Stats;

/// Installs the Prometheus recorder with an HTTP listener on `addr` (once per process).
pub(crate) fn serve(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("synchrony_sent_total", "Multicasts this node sent");
    describe_counter!("synchrony_delivered_total", "Multicasts delivered here");
    describe_counter!("synchrony_retransmits_total", "Link retransmission rounds");
    describe_counter!("synchrony_views_total", "Views installed here");
    describe_counter!("synchrony_rounds_total", "Membership rounds this node led");
    describe_counter!(
        "synchrony_quiet_views_total",
        "Group views changed by a decision that did not name the group (quiet at every survivor)"
    );
    describe_counter!("synchrony_suspicions_total", "Members this node began to suspect");
    describe_counter!("synchrony_frames_in_total", "Frames received");
    describe_counter!("synchrony_frames_out_total", "Frames sent");
    describe_counter!("synchrony_rejected_frames_total", "Frames dropped: failed authentication or decoding");
    describe_counter!("synchrony_rejected_handshakes_total", "Connections refused at the handshake");
    describe_counter!("synchrony_frames_dropped_total", "Frames dropped because a peer's queue was full");
    describe_counter!("synchrony_rejected_by_verifier_total", "Deliveries a message verifier rejected");
    describe_gauge!("synchrony_peer_queue_frames", "Frames waiting for a connection to a peer");
    describe_gauge!("synchrony_members", "Members of the cluster");
    describe_histogram!("synchrony_flush_seconds", Unit::Seconds, "flush() duration");
    describe_histogram!("synchrony_state_transfer_seconds", Unit::Seconds, "Join to state loaded");
    describe_histogram!("synchrony_send_to_delivery_seconds", Unit::Seconds, "Own messages, send to local delivery");
}

/// Publishes the counters (absolute values: they only grow).
pub(crate) fn publish(e: &Stats, net: &NetCounters, pending: usize, members: usize) {
    let c = |name: &'static str, v: u64| metrics::counter!(name).absolute(v);
    c("synchrony_sent_total", e.sent);
    c("synchrony_delivered_total", e.delivered);
    c("synchrony_retransmits_total", e.retransmits);
    c("synchrony_views_total", e.views);
    c("synchrony_rounds_total", e.rounds);
    c("synchrony_quiet_views_total", e.quiet_views);
    c("synchrony_suspicions_total", e.suspicions);
    c("synchrony_frames_in_total", e.frames_in);
    c("synchrony_frames_out_total", e.frames_out);
    c("synchrony_rejected_frames_total", e.rejected_auth + e.rejected_malformed + net.rejected_frames);
    c("synchrony_rejected_handshakes_total", net.rejected_handshakes);
    c("synchrony_frames_dropped_total", net.frames_dropped);
    c("synchrony_rejected_by_verifier_total", net.rejected_by_verifier);
    metrics::gauge!("synchrony_peer_queue_frames").set(pending as f64);
    metrics::gauge!("synchrony_members").set(members as f64);
}
