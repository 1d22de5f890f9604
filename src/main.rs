//! `reactor-echo`: the command line around the library's event loop.
//!
//! ```text
//! reactor-echo --listen 127.0.0.1:8000      # then: nc 127.0.0.1 8000
//! ```
//!
//! Under a supervisor it serves on an inherited socket (`LISTEN_FDS`, see
//! `activation.rs`), reports readiness (`NOTIFY_SOCKET`, `notify.rs`) and
//! writes `--pid-file` (`pid_file.rs`); `docs/restart.md` explains them,
//! and SIGUSR2's live upgrade (`upgrade.rs`), which starts this binary again
//! on the same listener.
//!
//! Exit status: 0 after a complete drain; 1 for a fatal start-up error (for
//! example, the address is in use, or the pid file cannot be written) or a
//! failure of the loop at run time; 2 for a bad command line or a bad
//! inherited socket (`LISTEN_FDS`); 3 when the drain deadline or a second
//! signal cut off connections with output undelivered, or when, with
//! `--workers`, a worker stuck past the deadline was left behind; 4 when,
//! with `--workers`, a worker panicked or its loop failed (it was replaced,
//! and the process served on until it was stopped).
//!
//! A stuck worker's thread is still running when `run` returns: returning
//! from `main` ends the process, and that thread with it.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use std::panic::{AssertUnwindSafe, catch_unwind};

use clap::{CommandFactory, Parser};
use log::{LevelFilter, Log, Metadata, Record, debug, error, info, warn};
use reactor_echo::framing::Framing;
use reactor_echo::pid_file::PidFile;
use reactor_echo::{Config, DrainReport, Echo, Server, UpgradePlan, Workers, activation, notify};
use simple_logger::SimpleLogger;

/// Fatal error while starting (address in use, ...).
const EXIT_START_FAILED: u8 = 1;
/// Bad input: the command line (clap exits with it too) or `LISTEN_FDS`.
const EXIT_BAD_INPUT: u8 = 2;
/// The drain ended with connections cut off (deadline or second signal), or
/// a worker was left behind, stuck.
const EXIT_DRAIN_INCOMPLETE: u8 = 3;
/// With `--workers`: a worker panicked or its loop failed; it was replaced.
const EXIT_WORKER_FAILED: u8 = 4;
/// More threads than any machine this runs on has cores.
const MAX_WORKERS: usize = 1024;

/// A line-echo TCP server on a single-threaded, hand-rolled mio event loop.
///
/// Every complete frame (by default a '\n'-terminated line) is sent back
/// byte for byte. SIGTERM, SIGINT, SIGQUIT or SIGHUP start a graceful
/// drain; a second one exits at once; SIGUSR1 logs statistics; SIGUSR2
/// starts the binary at this path again with the same arguments, hands it
/// the listener and, once it is ready, drains (a live upgrade).
///
/// Started with LISTEN_FDS=1 and LISTEN_PID (socket activation), it serves
/// on the inherited fd 3 and ignores --listen and --backlog (with
/// --accept reuseport, on fds 3 to 3+N-1 and as many more listeners as
/// --workers needs). With
/// NOTIFY_SOCKET set, it reports READY=1, STATUS and STOPPING=1 (sd_notify).
///
/// Exit status: 0 complete drain, 1 start-up error (or the loop failed),
/// 2 bad command line or inherited socket, 3 drain cut short (deadline or
/// second signal, or a stuck worker), 4 a worker failed (it was replaced).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Address to listen on: IP:PORT, [IPv6]:PORT or HOST:PORT (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000", value_parser = parse_listen)]
    listen: ListenAddr,

    /// How input is cut into frames: line ('\n'-terminated), fixed:N (N bytes each) or length (4-byte big-endian length, then the body)
    #[arg(long, value_name = "MODE", default_value = "line")]
    framing: Framing,

    /// Longest frame accepted, in bytes (line: without its '\n'; length: without the header); a longer one closes its connection
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = parse_at_least_one)]
    max_frame: usize,

    /// Connections served at once; more are accepted and closed at once
    #[arg(long, value_name = "N", default_value_t = 10000, value_parser = parse_at_least_one)]
    max_connections: usize,

    /// Seconds a graceful shutdown may take before the remaining connections are cut off
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    drain_timeout: Duration,

    /// Seconds without traffic either way before a connection is closed; 0 means never
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = parse_seconds)]
    idle_timeout: Duration,

    /// Listen backlog: connections the kernel completes while the loop is busy (capped by net.core.somaxconn)
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = parse_backlog)]
    backlog: u32,

    /// SO_SNDBUF for every connection, in bytes; 0 leaves it to the kernel's autotuning
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    send_buffer: usize,

    /// Event loops, one thread each: a number, or auto for one per CPU this process may run on
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = parse_workers)]
    workers: usize,

    /// With --workers: coordinator (one thread accepts and hands each client to the least-loaded worker) or reuseport (each worker accepts from its own SO_REUSEPORT listener, steered by the CPU that took the SYN)
    #[arg(long, value_name = "MODE", default_value = "coordinator")]
    accept: AcceptMode,

    /// With --workers: pin worker i to the i-th CPU this process may run on
    #[arg(long)]
    pin_cpus: bool,

    /// Log level: off, error, warn, info, debug or trace [default: info, or as RUST_LOG says]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<LevelFilter>,

    /// Write the process id to this file once listening; removed at exit
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,

    /// Seconds the new process of a live upgrade (SIGUSR2) has to report ready before it is killed and this one serves on
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    upgrade_timeout: Duration,
}

/// `--accept`: how clients reach the workers (`reactor_echo::Accept`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AcceptMode {
    Coordinator,
    Reuseport,
}

/// `--listen` as typed, and what it resolves to.
#[derive(Clone, Debug)]
struct ListenAddr {
    text: String,
    addrs: Vec<SocketAddr>,
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| {
            format!("`{s}` is not an address to listen on (IP:PORT, [IPv6]:PORT or HOST:PORT): {e}")
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!("`{s}` resolves to no address"));
    }
    Ok(ListenAddr {
        text: s.to_string(),
        addrs,
    })
}

fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

fn parse_backlog(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a whole number between 1 and {}",
            i32::MAX
        )),
    }
}

fn parse_workers(s: &str) -> Result<usize, String> {
    if s == "auto" {
        // The CPUs in this process's affinity mask (and cgroup quota), not
        // the machine's total: `taskset -c 0-3 reactor-echo --workers auto`
        // runs 4.
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not `auto` or a whole number between 1 and {MAX_WORKERS}"
        )),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{s}` is not a number of seconds (0 or more)"))
}

/// Logging goes to stderr. The level comes from `--log-level`, else from
/// `RUST_LOG` (`debug`, or per module: `info,reactor_echo=trace`), else info.
fn init_logging(cli_level: Option<LevelFilter>, workers: usize) {
    // With several loops, each line names its thread: `worker-3`, or `main`
    // for the coordinator.
    let mut logger = SimpleLogger::new()
        .with_utc_timestamps()
        .with_threads(workers > 1)
        .with_level(LevelFilter::Info);
    let mut bad_directives = Vec::new();
    match (cli_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => logger = logger.with_level(level),
        (None, Ok(spec)) => {
            for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                match directive.split_once('=') {
                    Some((target, level)) => match LevelFilter::from_str(level) {
                        Ok(level) => logger = logger.with_module_level(target, level),
                        Err(_) => bad_directives.push(directive.to_string()),
                    },
                    None => match LevelFilter::from_str(directive) {
                        Ok(level) => logger = logger.with_level(level),
                        // A bare module name means "everything from it".
                        Err(_) => logger = logger.with_module_level(directive, LevelFilter::Trace),
                    },
                }
            }
        }
        (None, Err(_)) => {}
    }
    log::set_max_level(logger.max_level());
    // Only fails if a logger is already set, which cannot happen here.
    let _ = log::set_boxed_logger(Box::new(SurviveClosedStderr(logger)));
    for d in bad_directives {
        warn!("RUST_LOG: ignoring `{d}`: not a level (off, error, warn, info, debug, trace)");
    }
}

/// simple_logger writes with `eprintln!`, which panics when stderr is gone
/// (say, a pipe whose reader has exited: EPIPE). A log line must never take
/// the server down, so that panic is caught here and logging is turned off.
struct SurviveClosedStderr(SimpleLogger);

impl Log for SurviveClosedStderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if catch_unwind(AssertUnwindSafe(|| self.0.log(record))).is_err() {
            log::set_max_level(LevelFilter::Off);
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    // First, while this is the only thread: LISTEN_PID and LISTEN_FDS can be
    // cleared from the environment only then, and fd 3 is taken before
    // anything else could be opened there.
    let mut activation = activation::take_from_env();
    // The path and arguments to start again on SIGUSR2, while they are the
    // ones we were started with (see `UpgradePlan::this_process`).
    let plan = UpgradePlan::this_process(Duration::ZERO, None);
    let cli = Cli::parse();
    let config = Config {
        framing: cli.framing,
        max_frame: cli.max_frame,
        max_connections: cli.max_connections,
        drain_timeout: cli.drain_timeout,
        idle_timeout: (!cli.idle_timeout.is_zero()).then_some(cli.idle_timeout),
        backlog: cli.backlog,
        send_buffer: (cli.send_buffer > 0).then_some(cli.send_buffer),
    };
    if let Err(msg) = config.validate() {
        Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit();
    }
    init_logging(cli.log_level, cli.workers);
    // The workers of a reuseport group, each of which takes one listener.
    let group = (cli.accept == AcceptMode::Reuseport && cli.workers > 1).then_some(cli.workers);
    let ready_channel = activation.as_mut().ok().and_then(|a| a.ready.take());
    let inherited = match inherited_listeners(activation, config.send_buffer, group) {
        Ok(inherited) => inherited,
        Err(msg) => {
            print_error(format_args!("{msg}"));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // Best effort, as sd_notify is: a bad NOTIFY_SOCKET is logged, not fatal.
    if let Err(msg) = notify::init_from_env() {
        warn!("{msg}; not notifying");
    }
    // Started by a live upgrade: READY=1 goes to the old process.
    if let Some(fd) = ready_channel {
        if let Err(msg) = notify::to_old_process(fd) {
            print_error(format_args!("{msg}"));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
        info!(
            "live upgrade: started by pid {}, which drains once we are ready",
            std::os::unix::process::parent_id()
        );
    }
    let plan = match plan {
        Ok(plan) => Some(UpgradePlan {
            timeout: cli.upgrade_timeout,
            pid_file: cli.pid_file.clone(),
            ..plan
        }),
        Err(e) => {
            warn!("cannot find our own executable ({e}): SIGUSR2 (live upgrade) will be ignored");
            None
        }
    };

    // What the error names if serving cannot start.
    let listen = match inherited.len() {
        0 => cli.listen.text.clone(),
        1 => "the inherited fd 3".to_string(),
        n => format!("the inherited fds 3 to {}", n + 2),
    };
    let mut inherited = inherited.into_iter();
    // One loop: the listener, the signals and every connection in one
    // thread. Several: a coordinator hands clients to N loops.
    let (local_addr, run): (_, Box<dyn FnOnce() -> io::Result<DrainReport>>) = if cli.workers == 1 {
        let server = match inherited.next() {
            Some(listener) => Server::from_listener(listener, config.clone(), Echo),
            None => Server::bind(&cli.listen.addrs, config.clone(), Echo),
        };
        match server {
            Ok(mut server) => {
                if let Some(plan) = plan {
                    server.upgrade_with(plan);
                }
                (server.local_addr(), Box::new(move || server.run()))
            }
            Err(e) => return cannot_listen(&listen, e),
        }
    } else {
        let echo = |_: usize| Echo;
        let group: Vec<_> = inherited.collect();
        let workers = match (group.is_empty(), cli.accept) {
            (false, AcceptMode::Coordinator) => {
                let listener = group.into_iter().next().expect("one inherited listener");
                Workers::from_listener(listener, config.clone(), cli.workers, echo)
            }
            (false, AcceptMode::Reuseport) => {
                Workers::from_group(group, config.clone(), cli.workers, echo)
            }
            (true, AcceptMode::Coordinator) => {
                Workers::bind(&cli.listen.addrs, config.clone(), cli.workers, echo)
            }
            (true, AcceptMode::Reuseport) => {
                Workers::bind_reuseport(&cli.listen.addrs, config.clone(), cli.workers, echo)
            }
        };
        match workers {
            Ok(mut workers) => {
                if let Some(plan) = plan {
                    workers.upgrade_with(plan);
                }
                if cli.pin_cpus
                    && let Err(e) = workers.pin_cpus()
                {
                    warn!("--pin-cpus: cannot read this process's CPUs ({e}); not pinning");
                }
                (workers.local_addr(), Box::new(move || workers.run()))
            }
            Err(e) => return cannot_listen(&listen, e),
        }
    };
    // Once the listener is ready, before the "listening on" line: whoever
    // reads the file finds a process that serves. Dropped (so removed) when
    // main returns.
    let _pid_file = match &cli.pid_file {
        None => None,
        Some(path) => match PidFile::create(path) {
            Ok(pid_file) => Some(pid_file),
            Err(e) => {
                print_error(format_args!(
                    "cannot write the pid file {}: {e}",
                    path.display()
                ));
                return ExitCode::from(EXIT_START_FAILED);
            }
        },
    };
    debug!("{config:?}");
    info!(
        "reactor-echo {}, pid {}: Ctrl-C or kill -TERM to drain, kill -USR1 for stats, kill -USR2 to upgrade",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    info!("listening on {local_addr}");
    notify::ready(local_addr);
    match run() {
        Ok(report) if report.workers_failed > 0 => ExitCode::from(EXIT_WORKER_FAILED),
        Ok(report) if report.is_complete() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_DRAIN_INCOMPLETE),
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

/// The sockets passed under `LISTEN_FDS`, checked and ready (see
/// `activation.rs`); none if none were passed. Only a reuseport group
/// (`group`: `--accept reuseport` with this many workers) serves more than
/// one, and at most one per worker. The error is for exit status 2.
fn inherited_listeners(
    activation: Result<activation::Activation, String>,
    send_buffer: Option<usize>,
    group: Option<usize>,
) -> Result<Vec<std::net::TcpListener>, String> {
    let activation = activation?;
    for note in &activation.notes {
        info!("socket activation: {note}");
    }
    let count = activation.fds.len();
    match group {
        None if count > 1 => {
            return Err(format!(
                "LISTEN_FDS={count}: this mode serves one listening socket (in a .socket unit: \
                 one ListenStream=). Several are a reuseport group's, which a live upgrade from \
                 --accept reuseport passes: serve them with --accept reuseport and \
                 --workers {count} or more"
            ));
        }
        Some(workers) if count > workers => {
            return Err(format!(
                "LISTEN_FDS={count}: a reuseport group of {count} listeners, and only {workers} \
                 workers would accept from them: start with --workers {count} or more"
            ));
        }
        _ => {}
    }
    let listeners = activation
        .fds
        .into_iter()
        .enumerate()
        .map(|(index, fd)| activation::listener(fd, index, send_buffer))
        .collect::<Result<Vec<_>, String>>()?;
    match count {
        0 => {}
        1 => info!(
            "socket activation: serving on the inherited fd 3; --listen and --backlog do not apply"
        ),
        n => info!(
            "socket activation: serving on the inherited fds 3 to {}, a reuseport group; \
             --listen does not apply",
            n + 2
        ),
    }
    Ok(listeners)
}

fn cannot_listen(listen: &str, e: io::Error) -> ExitCode {
    print_error(format_args!("cannot listen on {listen}: {e}"));
    ExitCode::from(EXIT_START_FAILED)
}

/// Prints `error: MESSAGE` on standard error in one write. `eprintln!`
/// writes the pieces of its format one by one, and the old and new
/// processes of a live upgrade share one standard error: a line written
/// whole stays whole beside the other's (a pipe keeps writes of up to
/// `PIPE_BUF`, 4 KiB, in one piece).
fn print_error(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("error: {message}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
