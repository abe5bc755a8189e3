//! Test certificates made by `openssl`: a CA, a server certificate for `localhost` and
//! 127.0.0.1, and a client certificate, all signed by the CA.

use std::path::Path;
use std::process::{Command, Stdio};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is missing: `apt-get install openssl`, or run `scripts/test`");
    assert!(status.success(), "openssl {args:?} failed");
}

/// Signs `<name>.pem` (key `<name>.key`) with the CA, for subject `cn` and extensions `ext`.
fn signed(dir: &Path, name: &str, cn: &str, ext: &str) {
    let (key, csr, pem, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out",
            &csr,
        ],
    );
    std::fs::write(dir.join(&extfile), ext).expect("write extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &extfile,
            "-out",
            &pem,
        ],
    );
}

/// Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` (for `localhost` and 127.0.0.1) and
/// `client.pem`/`client.key` into `dir`.
pub fn make(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=vigil-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    signed(
        dir,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    signed(
        dir,
        "client",
        "vigil-test-client",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
}
