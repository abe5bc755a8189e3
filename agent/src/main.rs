//! vigil-agent: the node agent. Tailing, scraping and host metrics arrive with their issue;
//! until then the binary only says so, so nobody mistakes it for a working agent.

fn main() {
    eprintln!("vigil-agent is not built yet: see the agent issue");
    std::process::exit(2);
}
