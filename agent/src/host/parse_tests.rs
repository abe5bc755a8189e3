//! Fixtures are trimmed copies of real files from a Linux 6.x machine.

use super::*;

const STAT: &str = "cpu  863591 0 112023 1481689 8042 0 1258 4887 0 0
cpu0 416756 0 52117 761708 2158 0 397 2376 0 0
cpu1 446835 12 59906 719981 5884 3 861 2511 0 0
cpux 1 2 3 4
cpu2 1 2
intr 5830212 0 0 0 0 0
ctxt 6002662
btime 1795423642
processes 228374
procs_running 5
procs_blocked 0
softirq 2441251 0 418679 4 130026 411028 0 807 606079 5766 868862
";

#[test]
fn stat_gives_per_cpu_modes_and_counters() {
    let s = stat(STAT);
    assert_eq!(s.cpus.len(), 2);
    assert_eq!(s.cpus[1].cpu, "1");
    assert_eq!(
        s.cpus[1].modes,
        [
            ("user", 446835.0),
            ("nice", 12.0),
            ("system", 59906.0),
            ("idle", 719981.0),
            ("iowait", 5884.0),
            ("irq", 3.0),
            ("softirq", 861.0),
            ("steal", 2511.0),
        ]
    );
    assert_eq!(s.boot_time, Some(1795423642));
    assert_eq!(s.context_switches, Some(6002662));
    assert_eq!(s.forks, Some(228374));
    assert_eq!(s.procs_running, Some(5));
    assert_eq!(s.procs_blocked, Some(0));
}

const MEMINFO: &str = "MemTotal:       24683656 kB
MemFree:         1234567 kB
MemAvailable:   20000000 kB
Active(anon):     123456 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
Broken line without colon
Weird:  x kB
";

#[test]
fn meminfo_uses_node_exporter_names() {
    let m = meminfo(MEMINFO);
    assert_eq!(
        m,
        [
            ("node_memory_MemTotal_bytes".to_owned(), 24683656.0 * 1024.0),
            ("node_memory_MemFree_bytes".to_owned(), 1234567.0 * 1024.0),
            (
                "node_memory_MemAvailable_bytes".to_owned(),
                20000000.0 * 1024.0
            ),
            (
                "node_memory_Active_anon_bytes".to_owned(),
                123456.0 * 1024.0
            ),
            ("node_memory_HugePages_Total".to_owned(), 0.0),
            ("node_memory_Hugepagesize_bytes".to_owned(), 2048.0 * 1024.0),
        ]
    );
}

#[test]
fn loadavg_reads_three_numbers() {
    assert_eq!(
        loadavg("0.52 0.58 0.59 2/512 12345\n"),
        Some([0.52, 0.58, 0.59])
    );
    assert_eq!(loadavg("0.52 x"), None);
    assert_eq!(loadavg(""), None);
}

#[test]
fn mounts_unescape_and_flag_read_only() {
    let text = "proc /proc proc rw,relatime 0 0
/dev/vda / ext4 rw,relatime,discard 0 0
/dev/sdb1 /mnt/my\\040disk vfat ro,nosuid 0 0
short line
";
    let m = mounts(text);
    assert_eq!(m.len(), 3);
    assert_eq!(m[2].mount_point, "/mnt/my disk");
    assert!(m[2].read_only);
    assert!(!m[1].read_only);
    assert_eq!(m[1].fs_type, "ext4");
    assert_eq!(unescape_octal("a\\134b\\9"), "a\\b\\9");
}

#[test]
fn diskstats_reads_the_classic_fields() {
    let text = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 253       0 vda 52349 18716 4169622 35163 1033311 729447 36402536 1236790 0 892644 1305790 0 0 0 0 69123 33836
 253       1 vda1 bad
";
    let d = diskstats(text);
    assert_eq!(d.len(), 2);
    let vda = &d[1];
    assert_eq!(vda.device, "vda");
    assert_eq!(vda.reads_completed, 52349.0);
    assert_eq!(vda.read_sectors, 4169622.0);
    assert_eq!(vda.read_time_ms, 35163.0);
    assert_eq!(vda.writes_completed, 1033311.0);
    assert_eq!(vda.written_sectors, 36402536.0);
    assert_eq!(vda.write_time_ms, 1236790.0);
    assert_eq!(vda.io_time_ms, 892644.0);
}

#[test]
fn net_dev_skips_headers() {
    let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 843467676  137951    0    0    0     0          0         0 843467676  137951    0    0    0     0       0          0
  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0
  bad: 1 2 3
";
    let n = net_dev(text);
    assert_eq!(n.len(), 2);
    let eth0 = &n[1];
    assert_eq!(eth0.device, "eth0");
    assert_eq!(
        (
            eth0.receive_bytes,
            eth0.receive_packets,
            eth0.receive_errs,
            eth0.receive_drop
        ),
        (1000.0, 10.0, 1.0, 2.0)
    );
    assert_eq!(
        (
            eth0.transmit_bytes,
            eth0.transmit_packets,
            eth0.transmit_errs,
            eth0.transmit_drop
        ),
        (2000.0, 20.0, 3.0, 4.0)
    );
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        "\n\n",
        "cpu",
        "cpu0",
        ":",
        "a:b:c",
        "\\",
        "x \\04",
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14 ü",
    ] {
        let _ = (
            stat(text),
            meminfo(text),
            loadavg(text),
            mounts(text),
            diskstats(text),
            net_dev(text),
        );
    }
}
