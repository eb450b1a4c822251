//! `madmail`: the chatmail relay binary. It parses the command line and
//! wires the library crates together; it is the only crate using `anyhow`.

mod accounts;
mod acme;
mod admin;
mod demo;
mod dns;
mod expire;
mod federation;
mod install;
mod logging;
mod memory;
mod proxy;
mod server;
mod turn;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A chatmail relay: instant accounts, end-to-end encrypted mail only,
/// delivered in milliseconds to Delta Chat clients.
#[derive(Parser)]
#[command(name = "madmail", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
    },
    /// Quick trial: a relay on loopback with temporary state, self-signed
    /// TLS and two ready accounts; Ctrl-C stops it and deletes the state.
    Demo(demo::DemoOptions),
    /// Check a configuration file and report every problem in it.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Manage accounts.
    Accounts {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: accounts::AccountsCommand,
    },
    /// Print every DNS record the relay needs (zone-file fragment or JSON).
    Dns {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
        /// Print JSON instead of a zone-file fragment.
        #[arg(long)]
        json: bool,
    },
    /// Print the `ss://` link of the Shadowsocks proxy (for clients that
    /// cannot reach the relay directly; also on the index page).
    ProxyLink {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
    },
    /// Inspect or change the outbound queue.
    Queue {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: admin::QueueCommand,
    },
    /// Delete expired mail and inactive accounts now (or, with
    /// `--dry-run`, count them). A running relay does this hourly.
    Expire {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
        #[command(flatten)]
        options: expire::ExpireOptions,
    },
    /// Set up this Debian host: the `madmail` user, /etc/madmail with a
    /// configuration for DOMAIN (an existing one is kept), /var/lib/madmail,
    /// the binary in /usr/local/bin and the systemd unit; prints the DNS
    /// records.
    Install(install::InstallOptions),
    /// Remove the binary and the unit; configuration and state (accounts,
    /// mail, DKIM key) only with `--purge`.
    Uninstall(install::UninstallOptions),
    /// Print the version.
    Version,
}

/// The static (musl) binary uses mimalloc: musl's allocator costs about 40 %
/// more memory per idle connection (docs/benchmarks.md, "Idle IMAP
/// connections"). glibc builds keep the system allocator.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    memory::tune();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("madmail: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.command {
        Command::Version => {
            println!("madmail {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => match chatmail_config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run { config } => {
            let settings = chatmail_config::load(&config)?;
            logging::init(&settings.config.log);
            runtime()?.block_on(server::run(settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(options) => {
            runtime()?.block_on(demo::run(options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dns { config, json } => admin::dns(&chatmail_config::load(&config)?, json),
        Command::ProxyLink { config } => proxy::print_link(&chatmail_config::load(&config)?),
        Command::Queue { config, command } => {
            let settings = chatmail_config::load(&config)?;
            runtime()?.block_on(admin::queue(settings, command))
        }
        Command::Expire { config, options } => {
            let settings = chatmail_config::load(&config)?;
            runtime()?.block_on(expire::run(settings, options))
        }
        Command::Accounts { config, command } => {
            let settings = chatmail_config::load(&config)?;
            runtime()?.block_on(accounts::run(settings, command))
        }
        Command::Install(options) => install::install(options),
        Command::Uninstall(options) => install::uninstall(options),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
