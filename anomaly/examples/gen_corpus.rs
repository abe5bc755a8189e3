//! Regenerates `anomaly/testdata/`: `cargo run -p vigil-anomaly --example gen_corpus`.

#[path = "../tests/support/corpus.rs"]
mod corpus;

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    std::fs::create_dir_all(&dir)?;
    let shapes = corpus::generate();
    for shape in &shapes {
        std::fs::write(dir.join(format!("{}.csv", shape.name)), &shape.csv)?;
        std::fs::write(
            dir.join(format!("{}.labels.json", shape.name)),
            &shape.labels,
        )?;
        println!("{:<22} {}", shape.name, shape.what);
    }
    std::fs::write(dir.join("corpus.json"), corpus::manifest(&shapes))?;
    Ok(())
}
