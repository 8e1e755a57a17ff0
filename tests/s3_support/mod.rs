//! A real S3-compatible server for the tests: moto's `moto_server` on a free
//! loopback port, killed when the handle drops.
//!
//! The server is found at `$CKPTDB_MOTO_SERVER`, else in the virtualenv
//! `scripts/moto.sh` makes (`target/motoenv`), else on `PATH`. Under CI
//! (`CI` set) a missing server fails the test; elsewhere the test is
//! skipped with a message saying how to install it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ckptdb::remote::object_store::aws::{AmazonS3, AmazonS3Builder};
use ckptdb::remote::RemoteOptions;

pub struct Moto {
    child: Child,
    pub port: u16,
}

fn server_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CKPTDB_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/motoenv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

impl Moto {
    /// Starts a server, or returns `None` (after saying why) when none is
    /// installed outside CI.
    pub fn start() -> Option<Moto> {
        Moto::start_with_env(&[])
    }

    /// A server that checks credentials: it accepts `unauthenticated`
    /// requests without them (enough to create buckets), then refuses
    /// every key it did not issue.
    pub fn start_checking_credentials(unauthenticated: u32) -> Option<Moto> {
        Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", unauthenticated.to_string())])
    }

    fn start_with_env(env: &[(&str, String)]) -> Option<Moto> {
        let Some(server) = server_path() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "moto_server not found under CI: run scripts/moto.sh or set CKPTDB_MOTO_SERVER"
                );
            }
            eprintln!(
                "SKIPPED: moto_server not found (run scripts/moto.sh or set CKPTDB_MOTO_SERVER)"
            );
            return None;
        };
        // A free port: bind port 0, read it, release it for the server.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", server.display()));
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited early: {status}");
            }
            if moto.request("GET", "/moto-api/").is_some() {
                return Some(moto);
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Options reaching this server with moto's test credentials and a
    /// small retry budget.
    pub fn options(&self) -> RemoteOptions {
        RemoteOptions::default()
            .endpoint(self.endpoint())
            .allow_http(true)
            .credentials("testing", "testing")
            .retries(2, Duration::from_secs(10))
    }

    /// One plain HTTP/1.1 request without a body; the status code, or
    /// `None` when the server does not answer.
    pub fn request(&self, method: &str, path: &str) -> Option<u16> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let line = String::from_utf8_lossy(&out);
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// A signed `object_store` client for `bucket` on this server, for
    /// what a test or bench does to objects directly (moto refuses
    /// unsigned writes).
    pub fn store(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("an S3 client for the moto server")
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&self, name: &str) {
        let status = self.request("PUT", &format!("/{name}"));
        assert_eq!(status, Some(200), "create bucket {name}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
