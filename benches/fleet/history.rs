//! What the history costs at fleet scale (src/history/): the records the
//! passes before it wrote (a one-shot pass records the passes that wrote),
//! their size and requests, and the time of `diff prod@-1h prod`.
//!
//! An hour-old history does not exist in a fresh bed: prod's newest record
//! (its last cold pass) is written again two hours back, as the service
//! would have left it, and one prod key is changed so that the diff has
//! something to say. `diff prod@-1h prod` then reads etcd at that record's
//! revision and every secret at its recorded version.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::spec::{Fleet, PREFIX};
use crate::{Bed, Row, Sample};

/// (key, value bytes) of every record of `env`, oldest first.
pub fn records(bed: &Bed, env: &str) -> Vec<(String, Vec<u8>)> {
    let prefix = format!("{PREFIX}/_history/{env}/");
    let mut kv = bed.etcd_client.kv_client();
    let resp = bed
        .runtime
        .block_on(kv.get(prefix.as_str(), Some(etcd_client::GetOptions::new().with_prefix())))
        .expect("etcd get");
    resp.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect()
}

pub struct Figures {
    /// Bytes (key and value) of prod's record of a cold pass (every target written).
    pub cold_bytes: usize,
    /// Median bytes of dev's records of the one-key passes.
    pub onekey_bytes: usize,
    /// etcd transactions of a one-key pass (the record is one).
    pub onekey_txns: f64,
    pub records: usize,
    pub diff_at: Row,
}

pub fn measure(bed: &mut Bed, one_key: &Row, runs: usize) -> Figures {
    let prod = records(bed, "prod");
    let (cold_key, cold_value) = prod.last().cloned().expect("prod's cold passes were recorded");
    let dev = records(bed, "dev");
    let mut onekey: Vec<usize> = dev.iter().rev().take(runs).map(|(k, v)| k.len() + v.len()).collect();
    onekey.sort_unstable();
    let onekey_bytes = onekey.get(onekey.len() / 2).copied().unwrap_or(0);
    let total = ["dev", "prod", "staging"].iter().map(|e| records(bed, e).len()).sum();

    // prod's newest record, two hours back.
    let mut record: serde_json::Value = serde_json::from_slice(&cold_value).expect("a record");
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_millis() as i64;
    let at = now_ms - 2 * 3600 * 1000;
    record["at_ms"] = serde_json::Value::from(at);
    let revision = record["revision"].as_i64().expect("a revision");
    let key = format!("{PREFIX}/_history/prod/{at:013}-{revision:012}");
    bed.put(&key, &record.to_string());
    bed.put(&Fleet::key_path("prod", 0, 3), "changed-since-the-hour-old-pass");

    let mut diff_at = Row { name: "diff prod@-1h prod".into(), samples: Vec::new() };
    for _ in 0..runs {
        let s: Sample = bed.cfgsync(&["diff", "prod@-1h", "prod"]);
        s.expect_code("diff prod@-1h prod", &[1]);
        if !s.proc.stdout.contains("1 changed, 0 only in prod@-1h, 0 only in prod") {
            s.fail("diff prod@-1h prod", "not the one key changed since");
        }
        diff_at.samples.push(s);
    }
    Figures {
        cold_bytes: cold_key.len() + cold_value.len(),
        onekey_bytes,
        onekey_txns: one_key.median(|s| s.etcd.get("Txn").copied().unwrap_or(0) as f64),
        records: total,
        diff_at,
    }
}
