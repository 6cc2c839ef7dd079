//! `/metrics`: every worker's counters, asked of the workers and summed at
//! scrape time, in the Prometheus (OpenMetrics) text format through
//! prometheus-client. Nothing here runs on the packet path: the workers
//! keep plain integers and answer a scrape between two batches.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::config::DatapathKind;
use crate::datapath::stats::{LATENCY_BUCKETS, RequestLatency, StreamCounters, WorkerStats};
use crate::node::NodeHandle;
use ip2p_turn::{AllocationRefusals, AuthFailures, Drops, Gauges, Responses, Stats};
use ip2p_xdp::Outcomes;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The node's metrics, in the OpenMetrics text format.
///
/// # Errors
/// Only a formatting error of the encoder.
pub fn render(node: &NodeHandle) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector(node.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[derive(Debug)]
struct NodeCollector(NodeHandle);

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let node = &self.0;
        let workers = node.stats();
        let mut sum = Sum::default();
        for w in &workers {
            sum.add(w);
        }
        let mut out = Out(encoder, node.counted_before());
        let datapath = match node.datapath() {
            DatapathKind::IoUring => "io_uring",
            _ => "epoll",
        };
        out.gauge_family(
            "ip2p_build_info",
            "Version and datapath in use",
            &[(&[("version", crate::VERSION), ("datapath", datapath)], 1)],
        )?;
        out.gauge("ip2p_uptime_seconds", "Seconds since the node started", node.uptime().as_secs_f64())?;
        out.gauge(
            "ip2p_draining",
            "1 while the node drains (refusing new allocations)",
            f64::from(u8::from(node.draining())),
        )?;
        out.gauge("ip2p_workers", "Worker threads", node.workers() as f64)?;
        out.gauge("ip2p_workers_responding", "Workers that answered this scrape", workers.len() as f64)?;
        relayed(&mut out, &sum.turn, node.xdp_outcomes().as_ref())?;
        out.gauge(
            "ip2p_xdp_interfaces",
            "Interfaces the XDP fast path is attached to",
            node.xdp_interfaces().len() as f64,
        )?;
        xdp_tables(&mut out, node.xdp_capacity(), &sum.xdp)?;
        usage_log(&mut out, node.usage_counts().as_deref())?;
        fleet(&mut out, node.fleet().map(AsRef::as_ref))?;
        requests(&mut out, &sum.turn.responses, &sum.latency)?;
        allocations(&mut out, &sum.turn, &sum.gauges, &sum.turn.allocations_refused)?;
        limits(&mut out, node, &sum.gauges)?;
        failures(&mut out, &sum.turn.auth_failures, &sum.turn.dropped)?;
        datapath_counters(&mut out, &sum)?;
        connections(&mut out, &sum.streams)?;
        per_worker(&mut out, &workers)
    }
}

/// Relayed traffic by direction and path: the sockets (the workers' count)
/// or the XDP fast path (the program's, when it runs).
fn relayed(out: &mut Out<'_, '_>, p: &Stats, xdp: Option<&Outcomes>) -> fmt::Result {
    let (mut packets, mut bytes) = (
        vec![
            (&[("direction", "to_peer"), ("path", "socket")][..], p.to_peer_packets),
            (&[("direction", "to_client"), ("path", "socket")][..], p.to_client_packets),
        ],
        vec![
            (&[("direction", "to_peer"), ("path", "socket")][..], p.to_peer_bytes),
            (&[("direction", "to_client"), ("path", "socket")][..], p.to_client_bytes),
        ],
    );
    if let Some(x) = xdp {
        packets.push((&[("direction", "to_peer"), ("path", "xdp")], x.to_peer.packets));
        packets.push((&[("direction", "to_client"), ("path", "xdp")], x.to_client.packets));
        bytes.push((&[("direction", "to_peer"), ("path", "xdp")], x.to_peer.bytes));
        bytes.push((&[("direction", "to_client"), ("path", "xdp")], x.to_client.bytes));
    }
    out.counter_family("ip2p_relayed_packets", "Datagrams relayed, by direction and path (socket or xdp)", &packets)?;
    out.counter_family("ip2p_relayed_bytes", "Payload bytes relayed, by direction and path (socket or xdp)", &bytes)?;
    let Some(x) = xdp else { return Ok(()) };
    out.counter_family(
        "ip2p_xdp_passed_packets",
        "Datagrams matching an XDP entry that the program left to the sockets, by reason",
        &[
            (&[("reason", "expired")], x.expired.packets),
            (&[("reason", "no_route")], x.no_route.packets),
            (&[("reason", "too_big")], x.too_big.packets),
            (&[("reason", "spoofed")], x.spoofed.packets),
        ],
    )
}

/// How full the XDP tables are, and what they refused.
fn xdp_tables(out: &mut Out<'_, '_>, capacity: u32, x: &crate::fastpath::MirrorCounts) -> fmt::Result {
    if capacity == 0 {
        return Ok(());
    }
    out.gauge("ip2p_xdp_table_entries", "Channels in the XDP tables (an entry each way)", x.channels as f64)?;
    out.gauge("ip2p_xdp_table_capacity", "Channels the XDP tables hold at most (xdp.channels)", f64::from(capacity))?;
    out.counter(
        "ip2p_xdp_table_full",
        "Channels the XDP tables refused (full, or their allocation at its limit): they stay on the sockets",
        x.refused,
    )?;
    out.counter("ip2p_xdp_entries_lapsed", "Lapsed channels removed from the XDP tables", x.lapsed)
}

/// What the usage log wrote, left out and lost, when it runs.
fn usage_log(out: &mut Out<'_, '_>, counts: Option<&crate::usage::UsageCounts>) -> fmt::Result {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(c) = counts else { return Ok(()) };
    let [start, interim, stop] = [0, 1, 2].map(|i| c.written.get(i).map_or(0, |n| n.load(Relaxed)));
    out.counter_family(
        "ip2p_usage_records",
        "Usage records written, by event",
        &[(&[("event", "start")], start), (&[("event", "interim")], interim), (&[("event", "stop")], stop)],
    )?;
    out.counter(
        "ip2p_usage_records_coalesced",
        "Interim usage records left out while the writer was behind (the next carries the totals)",
        c.coalesced.load(Relaxed),
    )?;
    out.counter("ip2p_usage_write_errors", "Usage records the file refused (lost)", c.failed.load(Relaxed))?;
    let Some(stream) = &c.stream else { return Ok(()) };
    out.counter("ip2p_usage_stream_records", "Usage records put in the fleet's stream", stream.sent.load(Relaxed))?;
    out.counter(
        "ip2p_usage_stream_lost",
        "Usage records the fleet's stream lost: more waited for the store than it keeps, or the node stopped first",
        stream.lost.load(Relaxed),
    )
}

/// The fleet, when the node is in one: whether its store answers, the
/// live nodes this node sees, and what went wrong with the store.
fn fleet(out: &mut Out<'_, '_>, fleet: Option<&crate::fleet::FleetState>) -> fmt::Result {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(f) = fleet else { return Ok(()) };
    let up = f64::from(u8::from(f.store_up()));
    out.gauge("ip2p_fleet_store_up", "1 while the fleet's store (Redis) answers", up)?;
    let view = f.view();
    out.gauge("ip2p_fleet_nodes", "Live nodes in the fleet's registry, as last read", view.nodes.len() as f64)?;
    // Each region's allocations and capacity (its nodes not draining), as
    // this node last read them.
    let mut regions: std::collections::BTreeMap<&str, (u64, u64)> = std::collections::BTreeMap::new();
    for n in view.nodes.iter().filter(|n| !n.draining) {
        let r = regions.entry(n.region.as_str()).or_default();
        r.0 += n.allocations;
        r.1 += n.capacity;
    }
    let labels: Vec<[(&str, &str); 1]> = regions.keys().map(|r| [("region", *r)]).collect();
    let rows = |pick: fn(&(u64, u64)) -> u64| -> Vec<(&[(&str, &str)], u64)> {
        labels.iter().zip(regions.values()).map(|(l, v)| (&l[..], pick(v))).collect()
    };
    let help = "Allocations on the region's nodes that are not draining, as this node last read them";
    out.gauge_family("ip2p_fleet_region_allocations", help, &rows(|v| v.0))?;
    let help = "Allocations the region's nodes that are not draining take at most, as this node last read them";
    out.gauge_family("ip2p_fleet_region_capacity", help, &rows(|v| v.1))?;
    let c = f.counts();
    out.counter(
        "ip2p_fleet_store_errors",
        "Calls to the fleet's store that failed (refused, timed out, an answer not understood)",
        c.store_errors.load(Relaxed),
    )?;
    out.counter(
        "ip2p_fleet_records_ignored",
        "What the node read from the fleet's store and ignored: node records, control messages and stored users that no node writes",
        c.records_ignored.load(Relaxed),
    )?;
    let [admitted, over_user, over_prefix, unknown] = c.words.each_ref().map(|n| n.load(Relaxed));
    out.counter_family(
        "ip2p_fleet_admissions",
        "The fleet's words on new allocations (fleet-wide quotas): admitted, over_user, over_prefix, unknown (the store could not say)",
        &[
            (&[("word", "admitted")], admitted),
            (&[("word", "over_user")], over_user),
            (&[("word", "over_prefix")], over_prefix),
            (&[("word", "unknown")], unknown),
        ],
    )
}

fn requests(out: &mut Out<'_, '_>, responses: &Responses, latency: &RequestLatency) -> fmt::Result {
    let rows: Vec<([(&str, &str); 2], u64)> =
        responses.iter().filter(|(_, _, n)| *n > 0).map(|(m, r, n)| ([("method", m), ("result", r)], n)).collect();
    let rows: Vec<(&[(&str, &str)], u64)> = rows.iter().map(|(l, n)| (&l[..], *n)).collect();
    out.counter_family("ip2p_responses", "STUN responses sent, by method and result (success or error code)", &rows)?;
    // Per-bucket counts: the encoder makes them cumulative.
    let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
        .iter()
        .chain(&[f64::MAX]) // written as +Inf
        .zip(latency.buckets)
        .map(|(le, n)| (*le, n))
        .collect();
    let help = "Time to handle a STUN request, from its bytes to its response";
    let mut m = out.0.encode_descriptor("ip2p_request_duration_seconds", help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(latency.sum.as_secs_f64(), latency.count(), &buckets, None)
}

fn allocations(out: &mut Out<'_, '_>, p: &Stats, g: &Gauges, refused: &AllocationRefusals) -> fmt::Result {
    out.gauge_family(
        "ip2p_allocations",
        "Live allocations, by relay transport",
        &[(&[("transport", "udp")], g.udp_allocations), (&[("transport", "tcp")], g.tcp_allocations)],
    )?;
    out.counter("ip2p_allocations_created", "Allocations created", p.allocations_created)?;
    out.counter("ip2p_allocations_expired", "Allocations that expired without being deleted", p.allocations_expired)?;
    out.counter(
        "ip2p_peers_revoked",
        "Live permissions and channels ended because the peer policy or the host's addresses changed",
        p.revoked,
    )?;
    out.reasons("ip2p_allocations_refused", "Allocate requests refused, by reason", &refused.by_reason())?;
    out.gauge("ip2p_permissions", "Live permissions", g.permissions as f64)?;
    out.gauge("ip2p_channels", "Live channel bindings", g.channels as f64)
}

/// What the node's limits hold against: the resources a client could try
/// to exhaust, each beside its bound.
fn limits(out: &mut Out<'_, '_>, node: &NodeHandle, g: &Gauges) -> fmt::Result {
    let quotas = node.quota_limits();
    out.gauge("ip2p_allocations_limit", "Allocations the node allows (0: no limit)", quotas.total as f64)?;
    out.gauge(
        "ip2p_allocations_counted",
        "Allocations and reservations counted against the limit",
        node.allocations() as f64,
    )?;
    out.gauge("ip2p_reservations", "EVEN-PORT reservations held (a bound socket each)", node.reservations() as f64)?;
    let help = "TCP and TLS connections counted against the connection limits (clients, RFC 6062 peers and data)";
    out.gauge("ip2p_connections_counted", help, node.connections() as f64)?;
    out.gauge(
        "ip2p_connections_limit",
        "The most TCP and TLS connections counted at once",
        node.connections_limit() as f64,
    )?;
    out.gauge(
        "ip2p_relay_ports",
        "Relay ports the node can hand out (its port range on each relay address)",
        node.relay_ports() as f64,
    )?;
    out.gauge(
        "ip2p_timers",
        "Entries in the workers' timer tables (one per allocation and reservation)",
        g.timers as f64,
    )?;
    let (open, limit) = open_files();
    out.gauge("ip2p_open_fds", "File descriptors the process has open", open as f64)?;
    out.gauge("ip2p_max_fds", "The process's open file limit", limit as f64)
}

/// Open file descriptors and the soft limit.
fn open_files() -> (usize, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
    (open, limit)
}

fn failures(out: &mut Out<'_, '_>, auth: &AuthFailures, dropped: &Drops) -> fmt::Result {
    out.reasons("ip2p_auth_failures", "Requests that failed authentication, by reason", &auth.by_reason())?;
    out.reasons("ip2p_dropped_packets", "Packets dropped, by reason", &dropped.by_reason())?;
    let help = "Unauthenticated requests left unanswered by response rate limiting (per source prefix)";
    out.counter("ip2p_response_rate_limited", help, dropped.response_rate_limit)
}

fn datapath_counters(out: &mut Out<'_, '_>, sum: &Sum) -> fmt::Result {
    out.counter("ip2p_requests", "STUN requests received", sum.turn.requests)?;
    let help = "Datagrams handed straight to another allocation of this node (also counted as relayed)";
    out.counter("ip2p_short_circuit_packets", help, sum.turn.short_circuited)?;
    let help = "Short-circuited datagrams for another worker's allocation (counted by the sender)";
    out.counter("ip2p_short_circuit_crossed", help, sum.turn.crossed)?;
    let help = "Of those, the datagrams handed to the owner's inbox (counted by the sender)";
    out.counter("ip2p_short_circuit_handoffs", help, sum.turn.to_owner)?;
    out.counter("ip2p_send_errors", "Sends that failed (full buffers, unreachable peers)", sum.send_errors)?;
    let help = "Sends that carried a run of datagrams to one destination as one (UDP GSO)";
    out.counter("ip2p_gso_sends", help, sum.gso.sends)?;
    out.counter("ip2p_gso_datagrams", "Datagrams sent in GSO sends", sum.gso.datagrams)?;
    out.counter("ip2p_truncated_packets", "Datagrams too large for a receive buffer", sum.truncated)?;
    out.counter("ip2p_buffer_exhaustion", "Times io_uring ran out of provided receive buffers", sum.out_of_buffers)
}

fn connections(out: &mut Out<'_, '_>, s: &StreamCounters) -> fmt::Result {
    out.gauge("ip2p_connections", "Open TCP and TLS client connections", s.open as f64)?;
    out.counter("ip2p_connections_accepted", "TCP and TLS client connections accepted", s.accepted)?;
    out.counter("ip2p_connections_refused", "Connections refused at a connection limit", s.refused)?;
    out.reasons(
        "ip2p_connections_closed",
        "Connections closed by the relay, by reason",
        &[("framing", s.closed_framing), ("tls", s.closed_tls), ("idle", s.closed_idle)],
    )?;
    out.counter(
        "ip2p_backlog_drops",
        "Frames to a slow TCP/TLS client dropped (send backlog full)",
        s.dropped_backlog,
    )?;
    out.counter("ip2p_proxy_headers_accepted", "PROXY headers read from load balancers", s.proxy_accepted)?;
    out.reasons(
        "ip2p_proxy_headers_refused",
        "Connections closed for their PROXY header, by reason",
        &[("untrusted", s.proxy_untrusted), ("invalid", s.proxy_invalid), ("timeout", s.proxy_timeout)],
    )
}

fn per_worker(out: &mut Out<'_, '_>, workers: &[WorkerStats]) -> fmt::Result {
    let ids: Vec<String> = workers.iter().map(|w| w.worker.to_string()).collect();
    let labels: Vec<[(&str, &str); 1]> = ids.iter().map(|id| [("worker", id.as_str())]).collect();
    let rows = |f: &dyn Fn(&WorkerStats) -> u64| -> Vec<(&[(&str, &str)], u64)> {
        labels.iter().zip(workers).map(|(l, w)| (&l[..], f(w))).collect()
    };
    out.gauge_family("ip2p_worker_allocations", "Live allocations per worker", &rows(&|w| w.allocations as u64))?;
    let packets = rows(&|w| w.turn.to_peer_packets + w.turn.to_client_packets);
    out.counter_family("ip2p_worker_relayed_packets", "Datagrams relayed per worker (both ways)", &packets)?;
    let help = "CPU time used per worker thread: its load";
    let mut m = out.0.encode_descriptor("ip2p_worker_cpu_seconds", help, None, MetricType::Counter)?;
    for (l, w) in labels.iter().zip(workers) {
        ConstCounter::new(w.cpu.as_secs_f64()).encode(m.encode_family(&&l[..])?)?;
    }
    Ok(())
}

/// Every worker's counters added up.
#[derive(Debug, Default)]
struct Sum {
    turn: Stats,
    gauges: Gauges,
    latency: RequestLatency,
    streams: StreamCounters,
    send_errors: u64,
    truncated: u64,
    out_of_buffers: u64,
    gso: crate::datapath::gso::GsoCounters,
    xdp: crate::fastpath::MirrorCounts,
}

impl Sum {
    fn add(&mut self, w: &WorkerStats) {
        self.turn.add(&w.turn);
        self.gauges.add(&w.gauges);
        self.latency.add(&w.latency);
        self.streams.add(&w.streams);
        self.send_errors += w.send_errors;
        self.gso.sends += w.gso.sends;
        self.gso.datagrams += w.gso.datagrams;
        self.truncated += w.truncated;
        self.out_of_buffers += w.out_of_buffers;
        self.xdp.add(&w.xdp);
    }
}

/// The node's counters as `/metrics` shows them, by sample: what a
/// handover passes on, so that the next process counts on from there
/// (as the same node, for whoever graphs its rates).
pub(crate) fn counters(node: &NodeHandle) -> crate::node::Counters {
    let mut out = crate::node::Counters::new();
    let Ok(text) = render(node) else { return out };
    let mut counter = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            counter = rest.strip_suffix(" counter").map(|name| format!("{name}_total"));
            continue;
        }
        let (Some(name), Some((sample, value))) = (&counter, line.rsplit_once(' ')) else { continue };
        let labels = sample.strip_prefix(name.as_str());
        if labels.is_some_and(|l| l.is_empty() || l.starts_with('{'))
            && let Ok(value) = value.parse()
        {
            out.insert(sample.to_owned(), value);
        }
    }
    out
}

/// A counter sample's name as the text format writes it.
fn sample(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return format!("{name}_total");
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}_total{{{}}}", labels.join(","))
}

/// The collector's encoder with the few shapes used here, and the counts
/// of the processes before this one, added to every counter.
struct Out<'a, 'b>(DescriptorEncoder<'a>, &'b crate::node::Counters);

type Rows<'r, 'l> = [(&'r [(&'l str, &'l str)], u64)];

/// What the processes before this one counted for a sample (nothing to
/// look up unless the node was handed over).
fn before(counted: &crate::node::Counters, name: &str, labels: &[(&str, &str)]) -> u64 {
    if counted.is_empty() {
        return 0;
    }
    counted.get(&sample(name, labels)).copied().unwrap_or(0)
}

impl Out<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let c = ConstCounter::new(value.saturating_add(before(self.1, name, &[])));
        c.encode(self.0.encode_descriptor(name, help, None, c.metric_type())?)
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let g = ConstGauge::new(value);
        g.encode(self.0.encode_descriptor(name, help, None, g.metric_type())?)
    }

    fn counter_family(&mut self, name: &str, help: &str, rows: &Rows<'_, '_>) -> fmt::Result {
        let mut m = self.0.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in rows {
            let counted = before(self.1, name, labels);
            ConstCounter::new(value.saturating_add(counted)).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn gauge_family(&mut self, name: &str, help: &str, rows: &Rows<'_, '_>) -> fmt::Result {
        let mut m = self.0.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in rows {
            ConstGauge::new(*value as f64).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// A counter with one `reason` label.
    fn reasons(&mut self, name: &str, help: &str, by_reason: &[(&str, u64)]) -> fmt::Result {
        let labels: Vec<[(&str, &str); 1]> = by_reason.iter().map(|(r, _)| [("reason", *r)]).collect();
        let rows: Vec<(&[(&str, &str)], u64)> = labels.iter().zip(by_reason).map(|(l, (_, n))| (&l[..], *n)).collect();
        self.counter_family(name, help, &rows)
    }
}
