//! Parsers for the /proc files host metrics come from. Each takes the file's text, so
//! tests feed fixtures; none panics, and a line it cannot read is skipped.

/// One `cpuN` line of /proc/stat, in ticks (USER_HZ).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTimes {
    /// The CPU number, as node_exporter's `cpu` label: `0`, `1`, …
    pub cpu: String,
    /// `(mode, ticks)` for node_exporter's modes: user, nice, system, idle, iowait, irq,
    /// softirq, steal (guest time is already inside user and nice).
    pub modes: Vec<(&'static str, f64)>,
}

/// What /proc/stat gives beyond CPU times.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    pub cpus: Vec<CpuTimes>,
    /// `btime`: boot time, seconds since the epoch.
    pub boot_time: Option<u64>,
    /// `ctxt`: context switches since boot.
    pub context_switches: Option<u64>,
    /// `processes`: forks since boot.
    pub forks: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

pub fn stat(text: &str) -> Stat {
    let mut out = Stat::default();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(key) = words.next() else { continue };
        let number = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok());
        match key {
            "btime" => out.boot_time = number(words.next()),
            "ctxt" => out.context_switches = number(words.next()),
            "processes" => out.forks = number(words.next()),
            "procs_running" => out.procs_running = number(words.next()),
            "procs_blocked" => out.procs_blocked = number(words.next()),
            // The aggregate `cpu` line is the sum of the others; node_exporter skips it.
            cpu if cpu.len() > 3 && cpu.starts_with("cpu") => {
                let id = &cpu[3..];
                if !id.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let values: Vec<f64> = words.map_while(|w| w.parse::<f64>().ok()).collect();
                // Kernels older than 2.6.11 lack `steal`; fewer than 4 fields is garbage.
                if values.len() < 4 {
                    continue;
                }
                let modes = CPU_MODES.iter().copied().zip(values).collect();
                out.cpus.push(CpuTimes {
                    cpu: id.to_owned(),
                    modes,
                });
            }
            _ => {}
        }
    }
    out
}

/// /proc/meminfo as node_exporter names it: `MemTotal: 16 kB` → (`node_memory_MemTotal_bytes`,
/// 16384), `Active(anon)` → `Active_anon`, unitless counts (`HugePages_Total`) without
/// `_bytes`.
pub fn meminfo(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_ascii_whitespace();
        let Some(value) = words.next().and_then(|w| w.parse::<f64>().ok()) else {
            continue;
        };
        let key = key.trim().replace('(', "_").replace(')', "");
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        match words.next() {
            Some("kB") => out.push((format!("node_memory_{key}_bytes"), value * 1024.0)),
            None => out.push((format!("node_memory_{key}"), value)),
            Some(_) => {}
        }
    }
    out
}

/// The three load averages of /proc/loadavg.
pub fn loadavg(text: &str) -> Option<[f64; 3]> {
    let mut words = text.split_ascii_whitespace().map(|w| w.parse::<f64>().ok());
    Some([words.next()??, words.next()??, words.next()??])
}

/// One line of /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub read_only: bool,
}

pub fn mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_ascii_whitespace();
            let device = unescape_octal(words.next()?);
            let mount_point = unescape_octal(words.next()?);
            let fs_type = words.next()?.to_owned();
            let options = words.next()?;
            Some(Mount {
                device,
                mount_point,
                fs_type,
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// /proc/mounts writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match octal {
            Some(n) if n <= 0xff => {
                out.push(n as u8);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One device of /proc/diskstats.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskStats {
    pub device: String,
    pub reads_completed: f64,
    pub read_sectors: f64,
    pub read_time_ms: f64,
    pub writes_completed: f64,
    pub written_sectors: f64,
    pub write_time_ms: f64,
    pub io_time_ms: f64,
}

pub fn diskstats(text: &str) -> Vec<DiskStats> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            // major minor name, then at least the 11 classic fields.
            if words.len() < 14 {
                return None;
            }
            let field = |i: usize| words[i].parse::<f64>().ok();
            Some(DiskStats {
                device: words[2].to_owned(),
                reads_completed: field(3)?,
                read_sectors: field(5)?,
                read_time_ms: field(6)?,
                writes_completed: field(7)?,
                written_sectors: field(9)?,
                write_time_ms: field(10)?,
                io_time_ms: field(12)?,
            })
        })
        .collect()
}

/// One interface of /proc/net/dev.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDev {
    pub device: String,
    pub receive_bytes: f64,
    pub receive_packets: f64,
    pub receive_errs: f64,
    pub receive_drop: f64,
    pub transmit_bytes: f64,
    pub transmit_packets: f64,
    pub transmit_errs: f64,
    pub transmit_drop: f64,
}

pub fn net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (device, counters) = line.split_once(':')?;
            let device = device.trim();
            let values: Vec<f64> = counters
                .split_ascii_whitespace()
                .map_while(|w| w.parse::<f64>().ok())
                .collect();
            if device.is_empty() || values.len() < 16 {
                return None;
            }
            Some(NetDev {
                device: device.to_owned(),
                receive_bytes: values[0],
                receive_packets: values[1],
                receive_errs: values[2],
                receive_drop: values[3],
                transmit_bytes: values[8],
                transmit_packets: values[9],
                transmit_errs: values[10],
                transmit_drop: values[11],
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
