//! Crash safety: `cfgsync reconcile --once` SIGKILLed at random points of
//! passes that rewrite 1,000 local files. After every kill each file holds
//! exactly its old or its new content (never a prefix, never empty, never
//! missing), and the next pass leaves no `.cfgsync-*` temp file behind and
//! brings every file to the new content.
//!
//! Where to kill is drawn at random and waited for as a condition, not
//! slept for: each round picks k in 0..=1000 and kills the pass as soon as
//! k files carry a modification time from this round (k = 0: as soon as
//! its first temp file appears; k = 1000: while it saves its state and
//! exits). The test asserts that most kills found a pass mid-write, so it
//! cannot pass by killing only idle or finished processes.
//!
//! The files live on a tmpfs mounted by the test: two fsyncs per file make
//! a 1,000-file rewrite take ~15 s on this machine's disk and a few hundred
//! milliseconds there, which is what makes 100 kills affordable. A process
//! kill (unlike a power cut) loses nothing an fsync would have kept, so
//! what is tested, that a reader never sees a partial file, is the same.
//!
//! `CFGSYNC_CRASH_ROUNDS` sets the number of kills (default 20, the
//! minimum; a round is two passes over 1,000 entries, ~2 s on an idle
//! 2-core machine, so 100 rounds is a few minutes).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::service::temp_files;
use crate::support::disk::Tmpfs;
use crate::support::{Project, poll_until};

const FILES: usize = 1000;
/// Bytes per file: several pages, so that a torn write could show.
const SIZE: usize = 6 * 1024;

fn name(i: usize) -> String {
    format!("f{i:04}")
}

fn content(i: usize, version: u32) -> String {
    let head = format!("v{version:06}:{}:", name(i));
    let fill = (b'a' + (version % 26) as u8) as char;
    let mut s = head;
    while s.len() < SIZE - 1 {
        s.push(fill);
    }
    s.push('\n');
    s
}

fn config() -> String {
    // A generous render budget: under a loaded CI machine rendering 1,000
    // entries can take more than the default 2 s, and speed is not the point.
    let mut c = String::from(
        "[files]\ndir = \"source\"\n\n[render]\ntimeout = \"60s\"\n\n[envs.prod]\n\n[[output]]\nname = \"bulk\"\n[output.entries]\n",
    );
    for i in 0..FILES {
        c.push_str(&format!("{n} = \"{{{{ key(name='{n}') }}}}\"\n", n = name(i)));
    }
    c.push_str("[[output.target]]\nkind = \"file\"\nformat = \"dir\"\npath = \"out\"\n");
    c
}

fn seed(p: &Project, version: u32) {
    let mut s = String::with_capacity(FILES * (SIZE + 16));
    s.push_str("[keys]\n");
    for i in 0..FILES {
        // The content ends in a newline, which TOML basic strings spell \n.
        s.push_str(&format!("{} = \"{}\\n\"\n", name(i), content(i, version).trim_end()));
    }
    p.write("source/prod.toml", &s);
}

/// How many files hold `new`; panics on any file that is neither `old`
/// nor `new`, a missing file, or an unexpected one.
fn check(dir: &Path, old: u32, new: u32) -> usize {
    let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().into_string().unwrap();
        if n.starts_with(".cfgsync-") {
            continue; // a temp file of the killed pass: the next pass's business
        }
        found.insert(n, std::fs::read(e.path()).unwrap());
    }
    assert_eq!(found.len(), FILES, "every file is there, and nothing else");
    let mut at_new = 0;
    for i in 0..FILES {
        let got = &found[&name(i)];
        if *got == content(i, new).into_bytes() {
            at_new += 1;
        } else {
            assert!(
                *got == content(i, old).into_bytes(),
                "{} is neither version {old} nor {new}: {} bytes starting {:?}",
                name(i),
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(24)])
            );
        }
    }
    at_new
}

/// Whether a pass started in `since` reached kill point `k`: for k = 0 a
/// temp file of it is there; else file k - 1 was written. A pass writes a
/// `dir` output's files in name order, so that is k files written; one
/// `stat` per poll keeps the poller from slowing the pass it watches.
fn reached(dir: &Path, k: usize, since: SystemTime) -> bool {
    if k == 0 {
        return std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".cfgsync-"));
    }
    std::fs::metadata(dir.join(name(k - 1))).and_then(|m| m.modified()).is_ok_and(|t| t >= since)
}

fn rounds() -> u32 {
    std::env::var("CFGSYNC_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20).max(20)
}

#[test]
fn sigkill_at_random_points_never_leaves_a_partial_file() {
    let p = Project::new(&config());
    let out = p.path("out");
    std::fs::create_dir(&out).unwrap();
    let _disk = Tmpfs::mount(&out, 64 * 1024 * 1024);
    seed(&p, 0);
    let started = Instant::now();
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    let first = started.elapsed();
    assert_eq!(check(&out, 0, 0), FILES);

    // One whole pass rewriting every file, for the record.
    seed(&p, 1);
    let started = Instant::now();
    let r = p.run(&["reconcile", "--once"]);
    let whole = started.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(check(&out, 1, 1), FILES);

    let (mut before, mut mid, mut after) = (0u32, 0u32, 0u32);
    let mut leftovers = 0usize;
    let (mut killed_at, mut next_passes) = (Duration::ZERO, Duration::ZERO);
    let rounds = rounds();
    let all = Instant::now();
    for round in 0..rounds {
        let (old, new) = (round + 1, round + 2);
        seed(&p, new);
        let k = fastrand::usize(0..=FILES);
        let since = SystemTime::now();
        let mut child =
            p.command(&["reconcile", "--once"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Every 2 ms: the kill point is a file count.
        let ended = poll_until(Duration::from_secs(120), Duration::from_millis(2), || {
            if child.try_wait().unwrap().is_some() {
                return Some(()); // finished before the kill point was seen
            }
            reached(&out, k, since).then(|| {
                let _ = child.kill();
            })
        });
        assert!(ended.is_some(), "round {round}: the pass neither reached {k} files nor exited");
        let status = child.wait().unwrap();
        killed_at += since.elapsed().unwrap_or_default();
        let at_new = check(&out, old, new);
        let temps = temp_files(&out).len();
        leftovers += temps;
        match (at_new, temps, status.success()) {
            (0, 0, _) => before += 1,
            (_, _, true) => after += 1,
            _ => mid += 1,
        }

        // The next pass finishes the job and cleans up after the killed one.
        let next = Instant::now();
        let r = p.run(&["reconcile", "--once"]);
        next_passes += next.elapsed();
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        assert_eq!(check(&out, new, new), FILES, "round {round}: every file new after the next pass");
        let left = temp_files(&p.path(""));
        assert!(left.is_empty(), "round {round}: temp files after the next pass: {left:?}");
    }
    let state_leftovers: Vec<_> = std::fs::read_dir(p.path(".cfgsync"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    eprintln!(
        "{rounds} kills of passes rewriting {FILES} files of {SIZE} bytes (first pass {first:?}, a whole rewrite {whole:?}): \
         {mid} mid-write, {before} before any write, {after} after the last; {leftovers} temp files found after kills, \
         all removed by the next pass; state temp files left: {state_leftovers:?}; \
         {:?} in all, killed after {:?} on average, the next pass took {:?} on average",
        all.elapsed(),
        killed_at / rounds,
        next_passes / rounds,
    );
    assert!(mid * 2 >= rounds, "most kills landed mid-write ({mid} of {rounds})");
}
