//! Usage records in the fleet's stream (a real redis-server): every
//! node's records in one place, those made while Redis was away sent when
//! it is back.

use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::redis::Redis;
use serde_json::Value;

use super::fleet::{node, until_listed};

/// The records in the stream, oldest first.
fn streamed(redis: &Redis) -> Vec<Value> {
    let out = redis.cli(&["--raw", "XRANGE", "ip2p:{ip2p}:usage", "-", "+"]);
    out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits up to 3 s for the stream to hold `n` records.
fn until_streamed(redis: &Redis, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let records = streamed(redis);
        if records.len() >= n {
            return records;
        }
        assert!(Instant::now() < deadline, "{} records in the stream, not {n}: {records:?}", records.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn records_go_to_the_stream_and_wait_while_it_is_away(dp: &'static str) {
    let mut redis = Redis::start();
    let (a, b) = (node(dp, &redis, "a", ""), node(dp, &redis, "b", ""));
    until_listed(a.admin.unwrap(), &["a", "b"], Duration::from_secs(5));
    let mut on_a = Client::new(a.addr, "alice", "wonderland").unwrap();
    on_a.allocate(None).unwrap();
    let mut on_b = Client::new(b.addr, "alice", "wonderland").unwrap();
    on_b.allocate(None).unwrap();
    on_a.refresh(Some(0)).unwrap();
    let records = until_streamed(&redis, 3);
    let events: Vec<(&str, &str)> =
        records.iter().map(|r| (r["event"].as_str().unwrap(), r["reason"].as_str().unwrap_or(""))).collect();
    assert!(events.contains(&("stop", "deleted")), "{dp}: {events:?}");
    assert_eq!(events.iter().filter(|(e, _)| *e == "start").count(), 2, "{dp}: both nodes' records: {events:?}");
    // Away: what happens meanwhile waits, and goes when it is back (empty).
    redis.stop();
    on_b.refresh(Some(0)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(redis.spawn());
    let records = until_streamed(&redis, 1);
    assert_eq!((&records[0]["event"], &records[0]["reason"]), (&"stop".into(), &"deleted".into()), "{dp}");
    assert_eq!(b.metrics()["ip2p_usage_stream_lost_total"], 0.0);
    assert!(b.metrics()["ip2p_usage_stream_records_total"] >= 2.0);
}

on_both_datapaths! {
    names:
    records_go_to_the_stream_and_wait_while_it_is_away: records_go_to_the_stream_and_wait_while_it_is_away();
}
