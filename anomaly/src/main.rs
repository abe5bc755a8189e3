//! vigil-anomaly: the anomaly service. Scoring, write-back and alerting arrive with their
//! issue; until then the binary only says so.

fn main() {
    eprintln!("vigil-anomaly is not built yet: see the anomaly issue");
    std::process::exit(2);
}
