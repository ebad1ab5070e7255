//! `ltxvault serve` as a child process, for tests that run the real binary the way an
//! operator does: on a free loopback port with `--auth none`, its log (stderr) appended
//! to a file, stopped with SIGTERM or killed with SIGKILL.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running (or just killed) server.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    running: bool,
}

impl Serve {
    /// Starts `ltxvault serve --data DATA --auth none --cluster-id off --listen ADDR ARGS…`
    /// with its stderr appended to `log`; does not wait for it to listen.
    pub fn spawn(data: &Path, log: &Path, args: &[&str]) -> Serve {
        let addr = SocketAddr::from(([127, 0, 0, 1], super::peers::free_port()));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the server log");
        let child = Command::new(env!("CARGO_BIN_EXE_ltxvault"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--auth", "none", "--cluster-id", "off", "--listen", &addr.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("run ltxvault serve");
        Serve { child, addr, log: log.to_path_buf(), running: true }
    }

    /// Waits until the server accepts connections; returns how long that took, or why it
    /// did not (it exited, or did not listen within `timeout`), with the end of its log.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                self.running = false;
                return Err(format!("the server exited ({status}) before listening:\n{}", self.log_tail(30)));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "the server did not listen within {} s:\n{}",
                    timeout.as_secs(),
                    self.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Serve::spawn`], then waits up to a minute for it to listen; panics if it does not.
    pub fn start(data: &Path, log: &Path, args: &[&str]) -> Serve {
        let mut serve = Serve::spawn(data, log, args);
        if let Err(why) = serve.wait_listening(Duration::from_secs(60)) {
            panic!("{why}");
        }
        serve
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it with SIGKILL, at whatever it is doing, and reaps it.
    pub fn kill(&mut self) {
        if self.running {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.running = false;
        }
    }

    /// SIGTERM, then waits up to a minute for the exit; panics if it does not come.
    pub fn stop(&mut self) -> ExitStatus {
        // SAFETY: signalling our own child, which has not been reaped yet (`running`).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                self.running = false;
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the server did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still alive (it may have died on its own, e.g. on a signal).
    pub fn alive(&mut self) -> bool {
        if self.running && self.child.try_wait().expect("wait for the server").is_some() {
            self.running = false;
        }
        self.running
    }

    /// Everything it has logged (including earlier runs appended to the same file).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}
