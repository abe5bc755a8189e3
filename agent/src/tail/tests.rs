//! The tailer against real files in a temporary directory: rotation by rename,
//! copytruncate, deletion, `start_at`, and resuming from checkpoints.

use std::fs::{File, OpenOptions};
use std::io::Write;

use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::*;

struct Harness {
    dir: tempfile::TempDir,
    checkpoints: Arc<Mutex<Checkpoints>>,
    tailer: Tailer,
    records: mpsc::Receiver<TailedRecord>,
    /// The tailer's clock: moved forward by hand.
    now: Instant,
}

fn source(dir: &Path, start_at: &str) -> LogSource {
    let yaml = format!(
        "include: [\"{}/*.log\"]\nformat: raw\nstart_at: {start_at}\nscan_interval: 1s\n",
        dir.display()
    );
    vigil_core::config::parse(&yaml).unwrap()
}

impl Harness {
    fn new(start_at: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        Self::with_dir(dir, start_at)
    }

    fn with_dir(dir: tempfile::TempDir, start_at: &str) -> Harness {
        let checkpoints = Arc::new(Mutex::new(
            Checkpoints::open(&dir.path().join("state")).unwrap(),
        ));
        let (tx, records) = mpsc::channel(10_000);
        let tailer = Tailer::new(
            &[source(&dir.path().join("logs"), start_at)],
            checkpoints.clone(),
            Telemetry::new(),
            tx,
            Some("node-1".into()),
        );
        Harness {
            dir,
            checkpoints,
            tailer,
            records,
            now: Instant::now(),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    fn append(&self, name: &str, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// One tick a scan interval later; the records it produced.
    fn tick(&mut self) -> Vec<TailedRecord> {
        self.now += Duration::from_secs(2);
        assert!(self.tailer.tick(self.now).is_ok());
        let mut out = Vec::new();
        while let Ok(record) = self.records.try_recv() {
            out.push(record);
        }
        out
    }

    fn ack(&self, records: &[TailedRecord]) {
        let mut checkpoints = lock(&self.checkpoints);
        for r in records {
            checkpoints.ack(r.ack.key, r.ack.generation, r.ack.offset);
        }
        checkpoints.save().unwrap();
    }
}

fn bodies(records: &[TailedRecord]) -> Vec<String> {
    let mut bodies: Vec<String> = records
        .iter()
        .map(|r| match &r.record.body.as_ref().unwrap().value {
            Some(Value::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    bodies.sort();
    bodies
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_and_the_new_one_from_the_start() {
    let mut h = Harness::new("beginning");
    h.append("app.log", "a\nb\n");
    let first = h.tick();
    assert_eq!(bodies(&first), vec!["a", "b"]);
    let resource = &first[0].resource.attributes;
    assert!(resource.contains(&string_attribute("host.name", "node-1")));
    assert!(resource.contains(&string_attribute(
        "log.file.path",
        h.log("app.log").display().to_string()
    )));
    h.ack(&first);

    let mut writer = OpenOptions::new()
        .append(true)
        .open(h.log("app.log"))
        .unwrap();
    writer.write_all(b"c\n").unwrap();
    std::fs::rename(h.log("app.log"), h.log("app.log.1")).unwrap();
    // The writer has not reopened yet.
    writer.write_all(b"d\n").unwrap();
    h.append("app.log", "e\n");
    let second = h.tick();
    assert_eq!(bodies(&second), vec!["c", "d", "e"]);
    assert_eq!(h.tailer.files.len(), 2);

    // The rotated file stays open until what was read from it is delivered.
    for _ in 0..3 {
        assert!(h.tick().is_empty());
    }
    assert_eq!(h.tailer.files.len(), 2);
    h.ack(&second);
    h.tick();
    h.tick();
    assert_eq!(h.tailer.files.len(), 1, "the rotated file is closed");
    assert!(h.tick().is_empty(), "nothing is read twice");
}

#[test]
fn copytruncate_reads_again_from_the_start_and_ignores_late_acks() {
    let mut h = Harness::new("beginning");
    h.append("app.log", "one\ntwo\nthree\n");
    let before = h.tick();
    assert_eq!(bodies(&before), vec!["one", "three", "two"]);
    File::create(h.log("app.log")).unwrap(); // truncate
    h.append("app.log", "x\n");
    let after = h.tick();
    assert_eq!(bodies(&after), vec!["x"]);
    h.ack(&before); // late: lines of the old content
    let ack = after[0].ack;
    assert_eq!(
        lock(&h.checkpoints).delivered(ack.key, ack.generation),
        Some(0)
    );
    h.ack(&after);
    assert_eq!(
        lock(&h.checkpoints).delivered(ack.key, ack.generation),
        Some(2)
    );
}

#[test]
fn a_deleted_file_is_read_to_its_end_then_closed() {
    let mut h = Harness::new("beginning");
    let mut writer = File::create(h.log("app.log")).unwrap();
    writer.write_all(b"a\n").unwrap();
    let first = h.tick();
    std::fs::remove_file(h.log("app.log")).unwrap();
    writer.write_all(b"b\nunterminated").unwrap();
    drop(writer);
    let rest = h.tick();
    assert_eq!(bodies(&rest), vec!["b"]);
    let last = h.tick();
    assert_eq!(
        bodies(&last),
        vec!["unterminated"],
        "a file that is gone ends"
    );
    h.ack(&first);
    h.ack(&rest);
    h.ack(&last);
    h.tick();
    assert!(h.tailer.files.is_empty());
    assert_eq!(h.tailer.telemetry.files_watched.get(), 0);
}

#[test]
fn start_at_end_applies_to_the_first_start_only_and_checkpoints_resume() {
    let mut h = Harness::new("end");
    h.append("old.log", "history\n");
    assert!(
        h.tick().is_empty(),
        "present at the first start: read from its end"
    );
    h.append("old.log", "fresh\n");
    h.append("new.log", "born\n");
    let records = h.tick();
    assert_eq!(
        bodies(&records),
        vec!["born", "fresh"],
        "found later: read from its beginning"
    );
    // Only `fresh` is delivered before the agent stops.
    let fresh: Vec<TailedRecord> = records
        .into_iter()
        .filter(|r| {
            r.resource
                .attributes
                .iter()
                .any(|a| format!("{a:?}").contains("old.log"))
        })
        .collect();
    h.ack(&fresh);
    lock(&h.checkpoints).save().unwrap();

    let Harness { dir, .. } = h;
    std::fs::remove_file(dir.path().join("logs/old.log")).unwrap();
    let mut h = Harness::with_dir(dir, "end");
    h.append("later.log", "while away\n");
    let records = h.tick();
    assert_eq!(
        bodies(&records),
        vec!["born", "while away"],
        "not a first start: undelivered lines replay, new files from the beginning"
    );
    lock(&h.checkpoints).save().unwrap();
    let saved = std::fs::read_to_string(h.dir.path().join("state/checkpoints.json")).unwrap();
    assert!(
        !saved.contains("old.log"),
        "a file gone while stopped is forgotten: {saved}"
    );
    assert!(saved.contains("later.log"), "{saved}");
}

#[test]
fn compressed_and_excluded_files_are_left_alone() {
    let h = Harness::new("beginning");
    h.append("a.log", "kept\n");
    h.append("skip.log", "excluded\n");
    std::fs::write(h.log("b.log.gz"), b"\x1f\x8b binary").unwrap();
    std::fs::write(h.log("c.zst"), b"x\n").unwrap();
    let yaml = format!(
        "include: [\"{0}/*\"]\nexclude: [\"{0}/skip.*\"]\nformat: raw\nstart_at: beginning\n",
        h.dir.path().join("logs").display()
    );
    let (tx, mut rx) = mpsc::channel(100);
    let mut tailer = Tailer::new(
        &[vigil_core::config::parse(&yaml).unwrap()],
        h.checkpoints.clone(),
        Telemetry::new(),
        tx,
        None,
    );
    assert!(tailer.tick(Instant::now()).is_ok());
    let mut records = Vec::new();
    while let Ok(r) = rx.try_recv() {
        records.push(r);
    }
    assert_eq!(bodies(&records), vec!["kept"]);
    assert_eq!(tailer.files.len(), 1);
}

#[test]
fn a_full_channel_holds_records_back_in_order_and_scanning_goes_on() {
    let h = Harness::new("beginning");
    let (tx, mut rx) = mpsc::channel(2);
    let mut tailer = Tailer::new(
        &[source(&h.dir.path().join("logs"), "beginning")],
        h.checkpoints.clone(),
        Telemetry::new(),
        tx,
        None,
    );
    h.append(
        "a.log",
        &(0..10).map(|i| format!("{i}\n")).collect::<String>(),
    );
    let mut now = Instant::now();
    let mut tick = |tailer: &mut Tailer| {
        now += Duration::from_secs(2);
        tailer.tick(now).unwrap()
    };
    assert_eq!(tick(&mut tailer), Tick::Blocked);
    assert_eq!(tailer.held.len(), 8, "one read's worth, held back");
    // Rotated while blocked: the new file is opened all the same.
    std::fs::rename(h.log("a.log"), h.log("a.log.1")).unwrap();
    h.append("a.log", "after rotation\n");
    assert_eq!(tick(&mut tailer), Tick::Blocked);
    assert_eq!(tailer.files.len(), 2);
    assert_eq!(
        tailer.telemetry.file_lag_bytes.get(),
        "after rotation\n".len() as i64,
        "lag is measured while nothing is read"
    );

    let mut received = Vec::new();
    for _ in 0..20 {
        while let Ok(record) = rx.try_recv() {
            received.push(record);
        }
        tick(&mut tailer);
    }
    let bodies: Vec<String> = received
        .iter()
        .map(|r| format!("{:?}", r.record.body.as_ref().unwrap().value))
        .collect();
    let expected: Vec<String> = (0..10)
        .map(|i| i.to_string())
        .chain(["after rotation".to_string()])
        .map(|b| format!("{:?}", Some(Value::StringValue(b))))
        .collect();
    assert_eq!(bodies, expected, "in order, none lost, none twice");
    assert!(tailer.held.is_empty());
}

#[test]
fn a_cri_message_whose_end_never_comes_leaves_after_a_timeout() {
    let mut h = Harness::new("beginning");
    let yaml = format!(
        "include: [\"{}/*.log\"]\nformat: cri\nstart_at: beginning\n",
        h.dir.path().join("logs").display()
    );
    let (tx, rx) = mpsc::channel(100);
    h.tailer = Tailer::new(
        &[vigil_core::config::parse(&yaml).unwrap()],
        h.checkpoints.clone(),
        Telemetry::new(),
        tx,
        None,
    );
    h.records = rx;
    h.append(
        "app.log",
        "2024-01-01T00:00:00Z stderr P the writer died here\n",
    );
    // Each tick is 2s later: read at +2s, still waiting at +4s and +6s, out at +8s.
    for _ in 0..3 {
        assert!(h.tick().is_empty(), "waiting for the F line");
    }
    let records = h.tick();
    assert_eq!(bodies(&records), vec!["the writer died here"]);
    assert!(
        records[0]
            .record
            .attributes
            .iter()
            .any(|a| a.key == file::SPLIT_ATTRIBUTE)
    );
}

#[test]
fn kubernetes_metadata_is_read_through_container_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let container = dir.path().join("pods/shop_cart-1_uid-9/web");
    std::fs::create_dir_all(&container).unwrap();
    std::fs::write(container.join("0.log"), "").unwrap();
    let link = dir.path().join("cart-1_shop_web-abc123.log");
    std::os::unix::fs::symlink(container.join("0.log"), &link).unwrap();
    let resource = resource_for(&link, &source(dir.path(), "end"), Some("node-2"));
    for (key, value) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "cart-1"),
        ("k8s.container.name", "web"),
        ("service.name", "web"),
        ("k8s.node.name", "node-2"),
    ] {
        assert!(
            resource.attributes.contains(&string_attribute(key, value)),
            "{key}: {:?}",
            resource.attributes
        );
    }
    assert!(resource.attributes.contains(&string_attribute(
        "log.file.path",
        link.display().to_string()
    )));
}

#[test]
fn multiline_messages_are_merged_per_file_and_leave_on_timeout() {
    let mut h = Harness::new("beginning");
    let yaml = format!(
        "include: [\"{}/*.log\"]\nstart_at: beginning\nmultiline: {{ start_pattern: '^\\S', timeout: 1s }}\n",
        h.dir.path().join("logs").display()
    );
    let (tx, rx) = mpsc::channel(100);
    h.tailer = Tailer::new(
        &[vigil_core::config::parse(&yaml).unwrap()],
        h.checkpoints.clone(),
        Telemetry::new(),
        tx,
        None,
    );
    h.records = rx;
    let text = "Exception: boom\n  at a()\n  at b()\nnext\n";
    h.append("app.log", text);
    let first = h.tick();
    assert_eq!(bodies(&first), vec!["Exception: boom\n  at a()\n  at b()"]);
    let last = h.tick(); // 2s later: past the 1s timeout
    assert_eq!(bodies(&last), vec!["next"]);
    assert_eq!(
        last[0].ack.offset,
        text.len() as u64,
        "delivering it delivers the whole file"
    );
    assert_eq!(
        first[0].ack.offset,
        text.len() as u64 - "next\n".len() as u64
    );
}
