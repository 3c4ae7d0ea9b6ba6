//! Measuring helpers shared by the database benchmarks.

use anyhow::Result;
use std::path::Path;

/// utime + stime (+ cutime + cstime when `children`) of a process, in seconds.
pub fn proc_cpu(pid: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut t = n(14) + n(15);
    if children {
        t += n(16) + n(17);
    }
    // USER_HZ is 100 on every Linux this runs on.
    Some(t as f64 * 0.01)
}

/// Peak RSS (VmHWM) of a process, in bytes; 0 when unreadable.
pub fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Median (sorts `v`).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Newlines in every file of `dir`: events written by a file sink.
pub fn count_lines(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            n += count_lines(&p)?;
        } else if p.extension().is_some_and(|x| x == "jsonl") {
            n += std::fs::read(&p)?.iter().filter(|&&c| c == b'\n').count() as u64;
        }
    }
    Ok(n)
}
