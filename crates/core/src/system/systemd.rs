//! A small client of systemd's manager (`org.freedesktop.systemd1`) on the system bus:
//! start a transient unit and wait for its job, stop a unit and wait, ask a unit's state.
//! Transient units live in /run only, which is what Tails wants: nothing to clean up on
//! the read-only image, everything rebuilt from the store at each start.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::{OwnedObjectPath, Variant as Value};

use crate::error::{Error, Result};

/// How long a start or stop job may take: longer than the units' own stop timeout below.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long systemd waits for a program to stop before killing it.
const STOP_TIMEOUT_USEC: u64 = 10_000_000;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn unmask_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Vec<(String, String, String)>>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
    fn reload(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String) -> zbus::Result<()>;
}

#[zbus::proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

/// One connection to systemd.
pub struct Systemd {
    connection: zbus::Connection,
    manager: ManagerProxy<'static>,
}

fn failed(unit: &str, what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Daemon { unit: unit.to_owned(), detail: format!("{what}: {detail}") }
}

/// The parts of a transient service unit that tails-server sets.
#[derive(Debug, Clone, Default)]
pub struct TransientService {
    pub description: String,
    pub exec: Vec<String>,
    /// Run by root before the daemon (prepares the data directory).
    pub exec_start_pre_privileged: Vec<Vec<String>>,
    pub user: Option<String>,
    /// (host path, path seen by the daemon, read-only)
    pub binds: Vec<(String, String, bool)>,
    /// The capabilities the program keeps (a program running as root: sshd locks each
    /// login into its folder); none for the others.
    pub capabilities: Vec<Capability>,
    /// System calls beyond `@system-service` the program needs (sshd: `@privileged`'s chroot,
    /// setuid and friends).
    pub extra_syscalls: Vec<String>,
    /// Paths the program must not see (`InaccessiblePaths`; those missing are skipped).
    pub hidden: Vec<PathBuf>,
    /// The TCP port the program listens on inside its own network namespace: its start is
    /// done only once a listening socket is there (see [`LISTENING_SCRIPT`]).
    pub port: u16,
    /// The unit whose network namespace the program shares (its door's proxy): a program
    /// started again while the proxy runs takes the proxy's namespace, where the proxy still
    /// connects, so its door never closes. The dependency goes from the program only: one from
    /// the proxy would keep the stopped program's unit loaded, and its name taken.
    pub joins_namespace_of: Option<String>,
}

/// The way in to a program that has a network namespace of its own: a socket systemd holds
/// (tor is given its path; the LAN's port too when asked) and systemd's socket proxy, started
/// at the first connection inside the program's namespace, which carries each connection to
/// the program's port there. Nobody else can listen in that namespace, so what tor reaches
/// is the program, whoever else runs on the computer. The door outlives the program's
/// restarts (see [`TransientService::joins_namespace_of`]): nobody can take its port
/// meanwhile.
#[derive(Debug, Clone)]
pub struct Door {
    pub socket_unit: String,
    pub proxy_unit: String,
    /// The program's unit, whose network namespace the proxy shares.
    pub program_unit: String,
    /// The Unix socket tor connects to.
    pub path: PathBuf,
    /// Owned by this user (tor's): on Tails tor's AppArmor profile lets it connect to a
    /// socket below its data directory only when the socket is its own.
    pub path_owner: String,
    /// allow-lan-connections: also a TCP listener on every address of the computer.
    pub lan_port: Option<u16>,
    /// The program's port inside its namespace.
    pub port: u16,
}

/// systemd's own proxy (Debian's systemd package, on every Tails).
pub const SOCKET_PROXY: &str = "/usr/lib/systemd/systemd-socket-proxyd";

/// Run after the program starts, inside its namespaces and as its user: returns once a TCP
/// socket listens on the port (`$1`, four hexadecimal digits as the kernel's tables write it),
/// so that the unit's start is done only when the program accepts connections. Root may not
/// connect to a local port on Tails, and the program's namespace is out of tails-server's
/// sight: this is asked where the program is. The unit's start timeout bounds the wait.
pub const LISTENING_SCRIPT: &str = "until grep -qE \"^ *[0-9]+: [0-9A-F]+:$1 [0-9A-F]+:[0-9A-F]+ 0A \" \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null; do sleep 0.05; done";

/// How long a program has to start and listen (systemd fails the start job then, before
/// [`JOB_TIMEOUT`]).
pub const PROGRAM_START_TIMEOUT: Duration = Duration::from_secs(45);

/// How the error of a start job systemd ended without success begins.
pub const JOB_FAILED: &str = "systemd could not start it";

/// The capabilities a program may keep (their numbers in linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Chown = 0,
    DacOverride = 1,
    DacReadSearch = 2,
    Fowner = 3,
    Kill = 5,
    Setgid = 6,
    Setuid = 7,
    SysChroot = 18,
    AuditWrite = 29,
}

/// The limits every program's unit gets: a misbehaving or compromised program cannot take
/// the computer's memory or fork without end.
const PROGRAM_MEMORY_MAX: u64 = 512 * 1024 * 1024;
const PROGRAM_TASKS_MAX: u64 = 256;

/// The sandbox of every unit that runs or serves a program, hardened like tails-server's own
/// unit: a network of its own (only a loopback where nobody else can listen; the program's
/// door, see [`Door`], is the only way in, and there is no way out), the kernel's knobs, other
/// users' processes, new namespaces, other address families and exotic system calls out of
/// reach, memory and tasks bounded. `capabilities`: the bounding set (a mask).
fn sandboxed(capabilities: u64, syscalls: Vec<String>) -> Vec<(&'static str, Value<'static>)> {
    vec![
        ("PrivateNetwork", Value::from(true)),
        ("NoNewPrivileges", Value::from(true)),
        ("ProtectSystem", Value::from("strict")),
        ("ProtectHome", Value::from("yes")),
        ("PrivateTmp", Value::from(true)),
        ("PrivateDevices", Value::from(true)),
        ("UMask", Value::from(0o077u32)),
        ("CapabilityBoundingSet", Value::from(capabilities)),
        ("AmbientCapabilities", Value::from(0u64)),
        ("ProtectKernelTunables", Value::from(true)),
        ("ProtectKernelModules", Value::from(true)),
        ("ProtectKernelLogs", Value::from(true)),
        ("ProtectControlGroups", Value::from(true)),
        ("ProtectClock", Value::from(true)),
        ("ProtectHostname", Value::from(true)),
        ("ProtectProc", Value::from("invisible")),
        // The namespaces it may still create: none.
        ("RestrictNamespaces", Value::from(0u64)),
        ("RestrictRealtime", Value::from(true)),
        ("RestrictSUIDSGID", Value::from(true)),
        ("LockPersonality", Value::from(true)),
        ("MemoryDenyWriteExecute", Value::from(true)),
        ("SystemCallArchitectures", Value::from(vec!["native".to_owned()])),
        ("SystemCallFilter", Value::from((true, syscalls))),
        ("SystemCallErrorNumber", Value::from(libc::EPERM)),
        (
            "RestrictAddressFamilies",
            Value::from((true, vec!["AF_INET".to_owned(), "AF_INET6".to_owned(), "AF_UNIX".to_owned()])),
        ),
        ("MemoryMax", Value::from(PROGRAM_MEMORY_MAX)),
        ("TasksMax", Value::from(PROGRAM_TASKS_MAX)),
    ]
}

impl Systemd {
    pub async fn connect() -> Result<Self> {
        let connection = zbus::Connection::system()
            .await
            .map_err(|e| failed("systemd", "cannot reach systemd on the system bus", e))?;
        let manager =
            ManagerProxy::new(&connection).await.map_err(|e| failed("systemd", "cannot talk to systemd", e))?;
        manager.subscribe().await.map_err(|e| failed("systemd", "cannot follow systemd's jobs", e))?;
        Ok(Self { connection, manager })
    }

    /// The unit's ActiveState ("active", "failed", …); "inactive" when systemd does not
    /// know it.
    pub async fn active_state(&self, unit: &str) -> Result<String> {
        let path = match self.manager.get_unit(unit).await {
            Ok(path) => path,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => {
                return Ok("inactive".into())
            }
            Err(e) => return Err(failed(unit, "cannot ask systemd about it", e)),
        };
        let proxy = UnitProxy::builder(&self.connection)
            .path(path)
            .build()
            .await
            .map_err(|e| failed(unit, "cannot ask systemd about it", e))?;
        proxy.active_state().await.map_err(|e| failed(unit, "cannot ask systemd about it", e))
    }

    /// Starts a transient service and waits until systemd has started it.
    pub async fn start_transient(&self, unit: &str, service: &TransientService) -> Result<()> {
        // A failed transient unit lingers until reset; its name would be taken.
        let _ = self.manager.reset_failed_unit(unit).await;
        let exec = |argv: &[String]| (argv[0].clone(), argv.to_vec(), false);
        let capabilities: u64 = service.capabilities.iter().fold(0, |mask, c| mask | 1u64 << *c as u64);
        let mut syscalls = vec!["@system-service".to_owned()];
        syscalls.extend(service.extra_syscalls.iter().cloned());
        let mut properties: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(service.description.clone())),
            ("Type", Value::from("exec")),
            ("ExecStart", Value::from(vec![exec(&service.exec)])),
            ("Restart", Value::from("on-failure")),
            ("CollectMode", Value::from("inactive-or-failed")),
            ("TimeoutStartUSec", Value::from(PROGRAM_START_TIMEOUT.as_micros() as u64)),
            ("TimeoutStopUSec", Value::from(STOP_TIMEOUT_USEC)),
        ];
        properties.extend(sandboxed(capabilities, syscalls));
        if !service.exec_start_pre_privileged.is_empty() {
            let pre: Vec<(String, Vec<String>, Vec<String>)> = service
                .exec_start_pre_privileged
                .iter()
                // As root, and given as they are: no $VARIABLE substitution by systemd.
                .map(|argv| (argv[0].clone(), argv.clone(), vec!["privileged".to_owned(), "no-env-expand".to_owned()]))
                .collect();
            properties.push(("ExecStartPreEx", Value::from(pre)));
        }
        let listening = vec![(
            "/bin/sh".to_owned(),
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                LISTENING_SCRIPT.to_owned(),
                "sh".to_owned(),
                format!("{:04X}", service.port),
            ],
            vec!["no-env-expand".to_owned()],
        )];
        properties.push(("ExecStartPostEx", Value::from(listening)));
        if let Some(user) = &service.user {
            properties.push(("User", Value::from(user.clone())));
        }
        if let Some(unit) = &service.joins_namespace_of {
            properties.push(("JoinsNamespaceOf", Value::from(vec![unit.clone()])));
        }
        if !service.hidden.is_empty() {
            // "-": a path that does not exist (no Persistent Storage, no tor) is skipped.
            let hidden: Vec<String> = service.hidden.iter().map(|p| format!("-{}", p.display())).collect();
            properties.push(("InaccessiblePaths", Value::from(hidden)));
        }
        let bind = |read_only: bool| -> Vec<(String, String, bool, u64)> {
            service
                .binds
                .iter()
                .filter(|b| b.2 == read_only)
                .map(|(from, to, _)| (from.clone(), to.clone(), false, 0))
                .collect()
        };
        let (rw, ro) = (bind(false), bind(true));
        if !rw.is_empty() {
            properties.push(("BindPaths", Value::from(rw)));
        }
        if !ro.is_empty() {
            properties.push(("BindReadOnlyPaths", Value::from(ro)));
        }
        let jobs = self.jobs().await?;
        let job = self
            .manager
            .start_transient_unit(unit, "replace", &properties, &[])
            .await
            .map_err(|e| failed(unit, "systemd refused to start it", e))?;
        self.wait(jobs, &job, unit, "start").await
    }

    /// Opens a program's [`Door`]: its socket unit, with the proxy as the socket's service.
    /// The program must run already, started with the proxy as its
    /// [`TransientService::joins_namespace_of`]: the proxy joins its namespace then.
    pub async fn open_door(&self, door: &Door) -> Result<()> {
        let unit = door.socket_unit.as_str();
        let _ = self.manager.reset_failed_unit(unit).await;
        let _ = self.manager.reset_failed_unit(&door.proxy_unit).await;
        let mut listen = vec![("Stream".to_owned(), door.path.display().to_string())];
        if let Some(port) = door.lan_port {
            listen.push(("Stream".to_owned(), format!("0.0.0.0:{port}")));
        }
        let socket: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(format!("tails-server: the way in to {}", door.program_unit))),
            ("Listen", Value::from(listen)),
            ("SocketUser", Value::from(door.path_owner.clone())),
            ("SocketGroup", Value::from(door.path_owner.clone())),
            ("SocketMode", Value::from(0o600u32)),
            ("RemoveOnStop", Value::from(true)),
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        let proxy_argv = vec![SOCKET_PROXY.to_owned(), format!("127.0.0.1:{}", door.port)];
        let mut proxy: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(format!("tails-server: carries connections to {}", door.program_unit))),
            ("ExecStart", Value::from(vec![(proxy_argv[0].clone(), proxy_argv.clone(), false)])),
            ("CollectMode", Value::from("inactive-or-failed")),
            // A user of its own for as long as it runs: it reads and writes the connections'
            // bytes and nothing else.
            ("DynamicUser", Value::from(true)),
        ];
        proxy.extend(sandboxed(0, vec!["@system-service".to_owned()]));
        let aux = [(door.proxy_unit.as_str(), proxy.as_slice())];
        let jobs = self.jobs().await?;
        let job = self
            .manager
            .start_transient_unit(unit, "replace", &socket, &aux)
            .await
            .map_err(|e| failed(unit, "systemd refused to open it", e))?;
        self.wait(jobs, &job, unit, "open").await
    }

    /// Runs a command as root in a transient oneshot unit (outside tails-server's own
    /// sandbox) and waits for it to finish successfully.
    pub async fn run(&self, unit: &str, argv: &[String]) -> Result<()> {
        self.run_described(unit, &format!("tails-server: {}", argv.join(" ")), argv).await
    }

    /// [`Systemd::run`], with a description of its own (the journal's and `systemctl`'s) for
    /// a command whose argv says little.
    pub async fn run_described(&self, unit: &str, description: &str, argv: &[String]) -> Result<()> {
        let _ = self.manager.reset_failed_unit(unit).await;
        let properties: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(description.to_owned())),
            ("Type", Value::from("oneshot")),
            ("ExecStart", Value::from(vec![(argv[0].clone(), argv.to_vec(), false)])),
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        let jobs = self.jobs().await?;
        let job = self
            .manager
            .start_transient_unit(unit, "replace", &properties, &[])
            .await
            .map_err(|e| failed(unit, "systemd refused to run it", e))?;
        self.wait(jobs, &job, unit, "run").await
    }

    /// Runs a short command as `user` in a transient oneshot unit, `input` on its standard
    /// input, and returns the first line it writes on its standard output (both are pipes
    /// handed to systemd). For what root itself may not do on Tails, whose firewall decides
    /// by user: the reachability probe runs as nobody. systemd ends the unit after `timeout`
    /// (a oneshot's start timeout); a failure or a timeout here stops it.
    pub async fn run_as(
        &self,
        unit: &str,
        user: &str,
        argv: &[String],
        input: &[u8],
        timeout: Duration,
    ) -> Result<String> {
        use std::io::{BufRead, Write};
        use std::os::fd::FromRawFd;
        let pipe = || -> Result<(std::fs::File, std::fs::File)> {
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two new descriptors into the array on success.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(failed(unit, "cannot make a pipe", std::io::Error::last_os_error()));
            }
            // SAFETY: both descriptors are new and owned by nothing else.
            Ok(unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) })
        };
        let (stdin_read, mut stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        // A few bytes: they fit in the pipe's buffer before anyone reads.
        stdin_write.write_all(input).map_err(|e| failed(unit, "cannot write its input", e))?;
        drop(stdin_write);
        let properties: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(format!("tails-server: {} (as {user})", argv.join(" ")))),
            ("Type", Value::from("oneshot")),
            ("ExecStart", Value::from(vec![(argv[0].clone(), argv.to_vec(), false)])),
            ("User", Value::from(user.to_owned())),
            ("CollectMode", Value::from("inactive-or-failed")),
            ("StandardInputFileDescriptor", Value::from(zbus::Fd::from(&stdin_read))),
            ("StandardOutputFileDescriptor", Value::from(zbus::Fd::from(&stdout_write))),
            ("NoNewPrivileges", Value::from(true)),
            ("ProtectSystem", Value::from("strict")),
            ("ProtectHome", Value::from("yes")),
            ("PrivateTmp", Value::from(true)),
            ("PrivateDevices", Value::from(true)),
            ("TimeoutStartUSec", Value::from(timeout.as_micros() as u64)),
            ("TimeoutStopUSec", Value::from(2_000_000u64)),
        ];
        let jobs = self.jobs().await?;
        let job = self
            .manager
            .start_transient_unit(unit, "replace", &properties, &[])
            .await
            .map_err(|e| failed(unit, "systemd refused to run it", e))?;
        // systemd holds its own copies now: the reader sees the end of the pipe once the
        // program and the unit are gone.
        drop(stdin_read);
        drop(stdout_write);
        let reader = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout_read).read_line(&mut line).map(|_| line)
        });
        // The start job of a oneshot unit ends with its program (or its start timeout); should
        // neither end in time (a program that ignores systemd's stop), it is stopped here.
        let both = async { tokio::join!(self.wait_at_most(jobs, &job, unit, "run", timeout), reader) };
        let Ok((waited, line)) = tokio::time::timeout(timeout + Duration::from_secs(10), both).await else {
            let _ = self.stop(unit).await;
            return Err(Error::Timeout { what: format!("{unit} to answer"), waited: timeout });
        };
        let line = match line {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(failed(unit, "cannot read its answer", e)),
            Err(e) => return Err(failed(unit, "cannot read its answer", e)),
        };
        if let Err(e) = waited {
            let _ = self.stop(unit).await;
            if line.is_empty() {
                return Err(e);
            }
        }
        if line.is_empty() {
            return Err(failed(unit, "it gave no answer", format_args!("see `journalctl -u {unit}`")));
        }
        Ok(line.trim_end().to_owned())
    }

    /// Masks a unit in /run (gone at the next boot at the latest): nothing can start it
    /// meanwhile, a package's maintainer script restarting its own unit during an installation
    /// included. Masked on disk only once systemd has reloaded: when it cannot, the mask is
    /// taken back, so that it is never left half-made.
    pub async fn mask_at_runtime(&self, unit: &str) -> Result<()> {
        self.manager
            .mask_unit_files(&[unit], true, true)
            .await
            .map_err(|e| failed(unit, "systemd refused to mask it", e))?;
        if let Err(e) = self.reload(unit).await {
            let _ = self.manager.unmask_unit_files(&[unit], true).await;
            return Err(e);
        }
        Ok(())
    }

    /// Makes systemd read its unit files again: a unit it has loaded ignores a change to
    /// them (a mask, an unmask) until then, and would still start.
    async fn reload(&self, unit: &str) -> Result<()> {
        self.manager.reload().await.map_err(|e| failed(unit, "systemd could not reload its units", e))
    }

    /// Whether a unit is masked already, by anyone (in /etc or in /run).
    pub async fn is_masked(&self, unit: &str) -> bool {
        self.manager.get_unit_file_state(unit).await.is_ok_and(|state| state.starts_with("masked"))
    }

    /// Takes back a mask of [`Systemd::mask_at_runtime`] (only /run's: a mask the person made
    /// in /etc stays). The unit is not started.
    pub async fn unmask_at_runtime(&self, unit: &str) -> Result<()> {
        self.manager
            .unmask_unit_files(&[unit], true)
            .await
            .map_err(|e| failed(unit, "systemd refused to unmask it", e))?;
        self.reload(unit).await
    }

    /// Stops a unit and waits; a unit systemd does not know is already stopped.
    pub async fn stop(&self, unit: &str) -> Result<()> {
        if self.active_state(unit).await? == "inactive" {
            return Ok(());
        }
        let jobs = self.jobs().await?;
        let job = match self.manager.stop_unit(unit, "replace").await {
            Ok(job) => job,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => {
                return Ok(())
            }
            Err(e) => return Err(failed(unit, "systemd refused to stop it", e)),
        };
        self.wait(jobs, &job, unit, "stop").await
    }

    async fn jobs(&self) -> Result<JobRemovedStream> {
        self.manager.receive_job_removed().await.map_err(|e| failed("systemd", "cannot follow systemd's jobs", e))
    }

    async fn wait(&self, jobs: JobRemovedStream, job: &OwnedObjectPath, unit: &str, what: &str) -> Result<()> {
        self.wait_at_most(jobs, job, unit, what, JOB_TIMEOUT).await
    }

    async fn wait_at_most(
        &self,
        mut jobs: JobRemovedStream,
        job: &OwnedObjectPath,
        unit: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<()> {
        let wait = async {
            while let Some(signal) = jobs.next().await {
                let Ok(args) = signal.args() else { continue };
                if &args.job == job {
                    return Some(args.result.clone());
                }
            }
            None
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => Err(failed(
                unit,
                &format!("systemd could not {what} it ({result})"),
                format_args!("see `journalctl -u {unit}`"),
            )),
            Ok(None) => Err(failed(unit, "systemd went away", "the system bus connection closed")),
            Err(_) => Err(Error::Timeout { what: format!("systemd to {what} {unit}"), waited: timeout }),
        }
    }
}
