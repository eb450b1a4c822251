//! `madmail`: the chatmail relay binary. It parses the command line and
//! wires the library crates together; it is the only crate using `anyhow`.

mod accounts;
mod acme;
mod admin;
mod control;
mod demo;
mod doctor;
mod expire;
mod federation;
mod install;
mod logging;
mod memory;
mod operator;
mod proxy;
mod server;
mod services;
mod supervise;
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
    /// What the running relay is doing: accounts, connections, queue,
    /// registration, services.
    Status(accounts::Target),
    /// Manage accounts (through the running relay).
    Accounts {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: accounts::AccountsCommand,
    },
    /// Open or close registration, or show whether it is open.
    Registration {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: accounts::RegistrationCommand,
    },
    /// Invite tokens: each lets a given number of new accounts register,
    /// even while registration is closed.
    #[command(visible_aliases = ["reg-tokens", "tokens"])]
    RegistrationTokens {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: accounts::TokensCommand,
    },
    /// Blocked addresses: banned accounts and deleted names.
    Blocklist {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: accounts::BlocklistCommand,
    },
    /// Which relays this one exchanges mail with (applies at once).
    Federation {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: accounts::FederationCommand,
    },
    /// Print the admin API's bearer token.
    AdminToken {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
        /// Print only the token.
        #[arg(long)]
        raw: bool,
    },
    /// Print every DNS record the relay needs (zone-file fragment or JSON).
    Dns {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
        /// Print JSON instead of a zone-file fragment.
        #[arg(long)]
        json: bool,
        /// Compare the published records with these instead; exit status 1
        /// when one is missing or different.
        #[arg(long)]
        check: bool,
    },
    /// Check the relay from the outside in: listeners, certificates, DNS
    /// and DKIM, federation, disk and memory; each problem with a fix.
    Doctor(doctor::DoctorOptions),
    /// Print the `ss://` link of the Shadowsocks proxy (for clients that
    /// cannot reach the relay directly; also on the index page).
    ProxyLink {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
        config: PathBuf,
    },
    /// Inspect or change the outbound queue.
    Queue {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: operator::QueueCommand,
    },
    /// Read the configuration file again and apply it without a restart
    /// (as SIGHUP does); nothing changes if a changed key needs a restart.
    Reload(accounts::Target),
    /// Switch the TURN server, the iroh relay or the Shadowsocks proxy
    /// off and on.
    Services {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: operator::ServicesCommand,
    },
    /// Show the limits in force, or change those that apply live.
    Settings {
        #[command(flatten)]
        target: accounts::Target,
        #[command(subcommand)]
        command: operator::SettingsCommand,
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
    /// Print a shell completion script (bash, zsh, fish, elvish or
    /// powershell) to standard output.
    Completions { shell: clap_complete::Shell },
    /// Write a man page for madmail and each of its commands into DIR.
    Man { dir: PathBuf },
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
            runtime()?.block_on(server::run(settings, config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(options) => {
            runtime()?.block_on(demo::run(options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dns {
            config,
            json,
            check: false,
        } => admin::dns(&chatmail_config::load(&config)?, json),
        Command::Dns { config, json, .. } => {
            doctor::dns_check(&chatmail_config::load(&config)?, json)
        }
        Command::Doctor(options) => doctor::doctor(options),
        Command::ProxyLink { config } => proxy::print_link(&chatmail_config::load(&config)?),
        Command::Queue { target, command } => operator::queue(target, command),
        Command::Reload(target) => operator::reload(target),
        Command::Services { target, command } => operator::services(target, command),
        Command::Settings { target, command } => operator::settings(target, command),
        Command::Expire { config, options } => {
            let settings = chatmail_config::load(&config)?;
            runtime()?.block_on(expire::run(settings, options))
        }
        Command::Status(target) => accounts::status(target),
        Command::Accounts { target, command } => accounts::accounts(target, command),
        Command::Registration { target, command } => accounts::registration(target, command),
        Command::RegistrationTokens { target, command } => accounts::tokens(target, command),
        Command::Blocklist { target, command } => accounts::blocklist(target, command),
        Command::Federation { target, command } => accounts::federation(target, command),
        Command::AdminToken { config, raw } => accounts::admin_token(&config, raw),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "madmail", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)?;
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(command, &dir)?;
            println!("man pages written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
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
