//! The `sessiongate` command: `run` (default) starts the proxy, `check` validates a configuration,
//! `config-schema` prints the JSON Schema of the configuration file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// glibc's malloc showed up as ~15% of the proxy's CPU in profiles of the load benchmark; mimalloc
/// cuts that (see benches/load/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (include/mimalloc.h of libmimalloc-sys
/// 0.1.49, which has no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped before mimalloc returns it to the OS, in milliseconds.
///
/// 0 (return at once) made every request fault its buffers back in: ~2.4 page faults per request
/// and 20-25 % fewer requests per second than 100 ms (benches/load/README.md, "pingora's
/// options"); mimalloc's own 10 ms still faulted ~0.7 times per request.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// Sets mimalloc's purge delay ([`PURGE_DELAY_MS`]) unless `MIMALLOC_PURGE_DELAY` is in the
/// environment (mimalloc reads it when the process starts), and has the proxy's worker run
/// mimalloc's collection about once a second ([`sessiongate::connections::set_worker_maintenance`]):
/// a delayed purge only runs when the freeing thread calls into mimalloc again, so after a burst
/// of connections closes and the worker goes idle, the memory would otherwise stay mapped
/// (benches/memory/idle.py).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists (the option API is
        // not thread safe); it only stores an integer option.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    sessiongate::connections::set_worker_maintenance(collect_freed_memory);
}

/// Returns the freed memory of this thread's heap to the OS, delay or not (`force`): after 3,000
/// idle connections closed, the RSS 10 s later was 17.1 MiB with `force` and 23.0 MiB without
/// (benches/memory/idle.py; the non-forced collection also left the baseline ~6 MiB higher).
fn collect_freed_memory() {
    // SAFETY: mimalloc's collection of the calling thread's heap; no pointers are passed.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[derive(Parser)]
#[command(
    name = "sessiongate",
    version,
    about = "An auth-aware reverse proxy for Ory Kratos sessions"
)]
struct Cli {
    /// The configuration file (TOML). Every key can be overridden by SESSIONGATE__SECTION__KEY.
    #[arg(long, short, global = true, default_value = "config/sessiongate.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy (the default).
    Run,
    /// Validate the configuration and exit: 0 when valid, 1 with one line per problem otherwise.
    Check,
    /// Print the JSON Schema of the configuration file (for editors) and exit; reads no file.
    ConfigSchema,
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Some(Command::ConfigSchema) = cli.command {
        return print_config_schema();
    }
    let config = match sessiongate::config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            for issue in e.issues() {
                if issue.path.is_empty() {
                    eprintln!("error: {}", issue.message);
                } else {
                    eprintln!("error: {issue}");
                }
            }
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            if let Err(problems) = probe_edge_kratos(&config) {
                for p in problems {
                    eprintln!("error: {p}");
                }
                return ExitCode::FAILURE;
            }
            for w in unresolved_upstreams(&config) {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} routes, listen {}, admin {})",
                cli.config.display(),
                config.routes.len(),
                config.server.listen,
                config.server.admin_listen
            );
            ExitCode::SUCCESS
        }
        Command::ConfigSchema => print_config_schema(),
        Command::Run => {
            if let Err(e) = sessiongate::logging::init(&config.log) {
                eprintln!("error: logging: {e}");
                return ExitCode::FAILURE;
            }
            let lead = config.server.grace_period.min(Duration::from_secs(5)) / 2;
            let gate = match sessiongate::build(config) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = sessiongate::reload::spawn(gate.shared.clone(), cli.config.clone()) {
                eprintln!("error: cannot start the reload watcher: {e}");
                return ExitCode::FAILURE;
            }
            let signals = sessiongate::server::UnixSignals {
                shared: gate.shared.clone(),
                readiness_lead: lead,
            };
            gate.run(Box::new(signals));
            ExitCode::SUCCESS
        }
    }
}

/// `config-schema`: the schema as pretty JSON on stdout.
fn print_config_schema() -> ExitCode {
    match serde_json::to_string_pretty(&sessiongate::config::json_schema()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot serialise the schema: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check`: upstream names that do not resolve from here. Only a warning: names are resolved at
/// run time, and a name that only resolves inside the deployment (a Kubernetes Service) is normal.
fn unresolved_upstreams(config: &sessiongate::Config) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for r in &config.routes {
        let (Some(up), None) = (&r.upstream, &r.edge) else {
            continue;
        };
        match (up.sni.as_str(), up.port)
            .to_socket_addrs()
            .map(|mut a| a.next().is_some())
        {
            Ok(true) => {}
            Ok(false) => out.push(format!(
                "routes[{}].upstream: `{}` resolves to no address here",
                r.index, up.sni
            )),
            Err(e) => out.push(format!(
                "routes[{}].upstream: `{}` does not resolve here ({e}); it is resolved again at run time",
                r.index, up.sni
            )),
        }
    }
    out
}

/// `check`: an edge route is useless when Kratos cannot be reached; say so before deploying.
fn probe_edge_kratos(config: &sessiongate::Config) -> Result<(), Vec<String>> {
    let edges: Vec<usize> = config
        .routes
        .iter()
        .filter(|r| r.edge.is_some())
        .map(|r| r.index)
        .collect();
    if edges.is_empty() {
        return Ok(());
    }
    let problem = |reason: String| {
        edges
            .iter()
            .map(|i| {
                format!(
                    "routes[{i}].kratos_edge: Kratos at {} is unreachable ({reason})",
                    config.kratos.public_url
                )
            })
            .collect::<Vec<_>>()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| problem(e.to_string()))?;
    let metrics = std::sync::Arc::new(
        sessiongate::metrics::Metrics::new().map_err(|e| problem(e.to_string()))?,
    );
    let client = sessiongate::session::whoami::WhoamiClient::new(&config.kratos, metrics)
        .map_err(|e| problem(e.to_string()))?;
    match rt.block_on(client.probe()) {
        Ok(_) => Ok(()),
        Err(reason) => Err(problem(reason.to_string())),
    }
}
