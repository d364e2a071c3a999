//! Starting apps and watching them end.
//!
//! Every app runs as the unprivileged guest user (with its supplementary
//! groups, such as video and render) in its own process group (so `Stop`
//! reaches its children too), with a clean environment: `HOME`, `USER`,
//! `LOGNAME`, `SHELL`, `PATH`, `LANG=C.UTF-8`, `XDG_RUNTIME_DIR` and
//! `WAYLAND_DISPLAY` set by the agent, plus what the host asked for. Its stdout and stderr go to
//! one pipe whose lines become `Log` events.
//!
//! One reaper thread waits for every child (`waitpid(-1)`), which also reaps
//! orphans when the agent runs as PID 1. Spawning and recording a child
//! happen under the same lock the reaper takes before looking a pid up, so an
//! app that exits at once is still reported.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rayos_contract::{AgentMessage, DisplayMode, LogLevel};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("working directory {0} does not exist")]
    NoCwd(String),
    #[error("environment variable name {0:?} is not valid")]
    BadEnvName(String),
    #[error("environment value of {0} contains a NUL byte")]
    BadEnvValue(String),
    #[error("argument contains a NUL byte")]
    NulInArgument,
    #[error("empty command line")]
    EmptyArgv,
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("no such handle {0}")]
    UnknownHandle(u64),
    #[error("cannot create the output pipe: {0}")]
    Pipe(std::io::Error),
}

/// Who apps run as, and where their Wayland sockets are.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// None: as the agent's own user (tests).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups (video, render, input...), from /etc/group.
    pub groups: Vec<u32>,
    pub user: String,
    pub home: PathBuf,
    pub shell: String,
    pub runtime_dir: PathBuf,
    pub embedded_display: String,
    pub native_display: String,
    pub path: String,
    /// The native-window bridge program (waypipe), when the guest has it.
    pub bridge: Option<PathBuf>,
}

impl RunAs {
    /// Look `user` up in the guest's password database.
    pub fn lookup(user: &str) -> Result<RunAs, String> {
        let name = std::ffi::CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
        // SAFETY: getpwnam returns a pointer into static storage or NULL; we
        // copy the fields out before any other passwd call.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return Err(format!("no user {user:?} in /etc/passwd"));
        }
        // SAFETY: pw is non-null and points to a valid passwd record; its
        // string fields are NUL-terminated C strings.
        let (uid, gid, home, shell) = unsafe {
            let pw = &*pw;
            let s = |p: *const libc::c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            (pw.pw_uid, pw.pw_gid, s(pw.pw_dir), s(pw.pw_shell))
        };
        Ok(RunAs {
            uid: Some(uid),
            gid: Some(gid),
            groups: group_list(&name, gid),
            user: user.to_string(),
            home: PathBuf::from(home),
            shell: if shell.is_empty() { "/bin/sh".into() } else { shell },
            runtime_dir: PathBuf::from(format!("/run/user/{uid}")),
            embedded_display: "wayland-0".into(),
            native_display: "wayland-native".into(),
            path: "/usr/local/bin:/usr/bin:/bin".into(),
            bridge: None,
        })
    }
}

/// `argv` run as a client of the native-window bridge: waypipe's server end
/// gives the app a Wayland socket of its own and carries its protocol over
/// one vsock connection to the host's bridge port (see CONTRACT.md, "The
/// native-window bridge"). Compression is off (vsock is a memory copy), and
/// no GPU buffers cross (the guest's apps draw into shared memory).
/// waypipe runs the app as its child in the same process group and exits
/// with the app's status.
pub fn bridged_argv(waypipe: &std::path::Path, argv: &[String]) -> Vec<String> {
    let socket = format!("{}:{}", rayos_contract::HOST_CID, rayos_contract::BRIDGE_PORT);
    let mut v: Vec<String> = vec![
        waypipe.display().to_string(),
        "--vsock".into(),
        "-s".into(),
        socket,
        "--no-gpu".into(),
        "-c".into(),
        "none".into(),
        "server".into(),
        "--".into(),
    ];
    v.extend(argv.iter().cloned());
    v
}

/// The longest app output line forwarded, in bytes of UTF-8.
pub const MAX_LINE: usize = 4096;

/// Splits an app's output into lines of at most [`MAX_LINE`] bytes, never
/// holding more than that: an overlong line is cut (on a character
/// boundary) and the rest of it, up to its newline, is dropped. Bytes that
/// are not UTF-8 become U+FFFD.
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
    skipping: bool,
}

impl Lines {
    /// Takes `data`; complete lines go to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<String>) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (part, rest) = match nl {
                Some(i) => (&data[..i], Some(&data[i + 1..])),
                None => (data, None),
            };
            if !self.skipping {
                let room = MAX_LINE - self.buf.len();
                self.buf.extend_from_slice(&part[..part.len().min(room)]);
                if part.len() > room {
                    out.push(cut_line(&self.buf));
                    self.buf.clear();
                    self.skipping = true;
                }
            }
            match rest {
                Some(r) => {
                    if !self.skipping {
                        out.push(cut_line(&self.buf));
                    }
                    self.buf.clear();
                    self.skipping = false;
                    data = r;
                }
                None => break,
            }
        }
    }

    /// The last line, if the output did not end with a newline.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() && !self.skipping {
            out.push(cut_line(&self.buf));
        }
        self.buf.clear();
    }
}

/// `bytes` as text of at most [`MAX_LINE`] bytes, cut on a character boundary.
fn cut_line(bytes: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if s.len() > MAX_LINE {
        let mut end = MAX_LINE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

struct Running {
    handle: u64,
    pgid: i32,
}

#[derive(Default)]
struct Table {
    next_handle: u64,
    by_pid: HashMap<i32, Running>,
    shutting_down: bool,
}

/// Launched apps; exits are delivered to `sink`.
pub struct Launcher {
    run_as: RunAs,
    table: Mutex<Table>,
    children: Condvar,
    sink: Sink,
}

/// Where exits and output lines go.
pub type Sink = Arc<dyn Fn(AgentMessage) + Send + Sync>;

impl Launcher {
    /// A launcher whose reaper thread runs for the life of the process.
    pub fn start(run_as: RunAs, sink: Sink) -> Arc<Launcher> {
        let l = Arc::new(Launcher { run_as, table: Mutex::new(Table::default()), children: Condvar::new(), sink });
        let reaper = l.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reaper.reap())
            .expect("spawn the reaper thread");
        l
    }

    pub fn run_as(&self) -> &RunAs {
        &self.run_as
    }

    /// Start `argv`; returns `(handle, pid)`.
    pub fn launch(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
        display: DisplayMode,
    ) -> Result<(u64, u32), LaunchError> {
        let (program, rest) = argv.split_first().ok_or(LaunchError::EmptyArgv)?;
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(LaunchError::NulInArgument);
        }
        for (k, v) in env {
            let valid = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(LaunchError::BadEnvName(k.clone()));
            }
            if v.contains('\0') {
                return Err(LaunchError::BadEnvValue(k.clone()));
            }
        }
        let ra = &self.run_as;
        let cwd = cwd.map(PathBuf::from).unwrap_or_else(|| ra.home.clone());
        if !cwd.is_dir() {
            return Err(LaunchError::NoCwd(cwd.display().to_string()));
        }
        let display_name = match display {
            DisplayMode::Embedded => &ra.embedded_display,
            DisplayMode::Native => &ra.native_display,
        };
        let mut cmd = Command::new(program);
        cmd.args(rest)
            .env_clear()
            .env("HOME", &ra.home)
            .env("USER", &ra.user)
            .env("LOGNAME", &ra.user)
            .env("SHELL", &ra.shell)
            .env("PATH", &ra.path)
            .env("XDG_RUNTIME_DIR", &ra.runtime_dir)
            .env("WAYLAND_DISPLAY", display_name)
            .env("LANG", "C.UTF-8")
            .envs(env)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .process_group(0);
        if let (Some(uid), Some(gid)) = (ra.uid, ra.gid) {
            let groups: Vec<libc::gid_t> = ra.groups.clone();
            // SAFETY: the closure runs in the child between fork and exec and
            // only makes async-signal-safe system calls on memory allocated
            // before the fork. Supplementary groups must be set while still
            // root, so the whole switch happens here (std's uid() would drop
            // them).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let (read_end, write_end) = pipe().map_err(LaunchError::Pipe)?;
        let err_end = write_end.try_clone().map_err(LaunchError::Pipe)?;
        cmd.stdout(Stdio::from(write_end)).stderr(Stdio::from(err_end));

        let mut table = self.table.lock().expect("launcher table");
        if table.shutting_down {
            return Err(LaunchError::ShuttingDown);
        }
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn { program: program.clone(), source })?;
        // Our copies of the write ends are dropped with `cmd`, so the reader
        // sees EOF when the app (and everything it forked) closes them.
        drop(cmd);
        let pid = child.id();
        // The reaper owns waiting; the Child handle is only dropped.
        drop(child);
        table.next_handle += 1;
        let handle = table.next_handle;
        table.by_pid.insert(pid as i32, Running { handle, pgid: pid as i32 });
        drop(table);
        self.children.notify_all();
        self.forward_output(handle, read_end);
        tracing::info!(handle, pid, "launched {}", argv.join(" "));
        Ok((handle, pid))
    }

    fn forward_output(&self, handle: u64, read_end: OwnedFd) {
        let sink = self.sink.clone();
        let _ = std::thread::Builder::new().name(format!("app{handle}-output")).spawn(move || {
            let mut reader = std::fs::File::from(read_end);
            let mut lines = Lines::default();
            let mut chunk = [0u8; 8192];
            let mut out = Vec::new();
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                lines.push(&chunk[..n], &mut out);
                for text in out.drain(..) {
                    sink(AgentMessage::Log { level: LogLevel::Info, line: format!("[app {handle}] {text}") });
                }
            }
            lines.finish(&mut out);
            for text in out {
                sink(AgentMessage::Log { level: LogLevel::Info, line: format!("[app {handle}] {text}") });
            }
        });
    }

    /// SIGTERM the app's process group, SIGKILL it after `grace`.
    pub fn stop(self: &Arc<Self>, handle: u64, grace: Duration) -> Result<(), LaunchError> {
        let pgid = self.pgid_of(handle).ok_or(LaunchError::UnknownHandle(handle))?;
        signal_group(pgid, libc::SIGTERM);
        let me = self.clone();
        let _ = std::thread::Builder::new().name(format!("stop{handle}")).spawn(move || {
            std::thread::sleep(grace);
            if me.pgid_of(handle) == Some(pgid) {
                signal_group(pgid, libc::SIGKILL);
            }
        });
        Ok(())
    }

    fn pgid_of(&self, handle: u64) -> Option<i32> {
        let t = self.table.lock().expect("launcher table");
        t.by_pid.values().find(|r| r.handle == handle).map(|r| r.pgid)
    }

    /// Refuse new launches, SIGTERM every app, wait up to `grace`, SIGKILL
    /// what is left.
    pub fn stop_all(&self, grace: Duration) {
        let groups: Vec<i32> = {
            let mut t = self.table.lock().expect("launcher table");
            t.shutting_down = true;
            t.by_pid.values().map(|r| r.pgid).collect()
        };
        for g in &groups {
            signal_group(*g, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.table.lock().expect("launcher table").by_pid.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for g in &groups {
            signal_group(*g, libc::SIGKILL);
        }
    }

    pub fn running(&self) -> usize {
        self.table.lock().expect("launcher table").by_pid.len()
    }

    fn reap(&self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-pointer; -1 waits for any child.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                // ECHILD: nothing to wait for until the next launch.
                let t = self.table.lock().expect("launcher table");
                let _unused = self.children.wait_timeout(t, Duration::from_millis(500)).expect("launcher table");
                continue;
            }
            let running = self.table.lock().expect("launcher table").by_pid.remove(&pid);
            let Some(r) = running else {
                tracing::debug!(pid, "reaped an orphan");
                continue;
            };
            let (code, signal) = if libc::WIFEXITED(status) {
                (Some(libc::WEXITSTATUS(status)), None)
            } else if libc::WIFSIGNALED(status) {
                (None, Some(libc::WTERMSIG(status)))
            } else {
                continue;
            };
            tracing::info!(handle = r.handle, pid, ?code, ?signal, "app exited");
            (self.sink)(AgentMessage::Exited { handle: r.handle, status: code, signal });
        }
    }
}

/// The user's groups: its primary group and every group listing it.
fn group_list(user: &std::ffi::CStr, gid: u32) -> Vec<u32> {
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let want = n;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at
        // most that many and stores the count it needs in `n`.
        let rc = unsafe { libc::getgrouplist(user.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n <= want || n > 65536 {
            return vec![gid];
        }
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe { libc::kill(-pgid, sig) };
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.push(c, &mut out);
        }
        l.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_split_across_reads_and_the_last_one_is_kept() {
        assert_eq!(split(&[b"a\nb", b"c\n\nd"]), ["a", "bc", "", "d"]);
        assert_eq!(split(&[b"\xff ok\n"]), ["\u{fffd} ok"]);
    }

    #[test]
    fn an_overlong_line_is_cut_on_a_character_boundary_and_its_rest_dropped() {
        // 4095 ASCII bytes then a 3-byte character: byte 4096 falls inside it.
        let mut line = vec![b'x'; MAX_LINE - 1];
        line.extend_from_slice("€€€".as_bytes());
        line.extend_from_slice(b" and much more that is dropped\nnext\n");
        let out = split(&[&line[..1000], &line[1000..]]);
        assert_eq!(out.len(), 2, "{:?}", out.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(out[0].len(), MAX_LINE - 1, "cut before the character that does not fit");
        assert_eq!(out[1], "next");
        // Invalid bytes widen to U+FFFD (3 bytes each): still at most MAX_LINE.
        let out = split(&[&[0xffu8; MAX_LINE][..], b"\n"]);
        assert!(out[0].len() <= MAX_LINE && out[0].chars().all(|c| c == '\u{fffd}'));
    }

    #[test]
    fn a_line_without_end_never_grows_past_the_limit() {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for _ in 0..1000 {
            l.push(&[b'y'; 4096], &mut out);
            assert!(l.buf.len() <= MAX_LINE);
        }
        assert_eq!(out.len(), 1, "one cut line, the rest dropped until a newline");
        l.push(b"\nz\n", &mut out);
        assert_eq!(out.last().map(String::as_str), Some("z"));
    }
}
