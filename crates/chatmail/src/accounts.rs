//! `madmail accounts ...`: account administration from the command line.

use std::process::ExitCode;
use std::sync::Arc;

use chatmail_accounts::Accounts;
use chatmail_config::Settings;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// List all accounts, one address a line.
    List,
    /// Create an account; prints the password when none is given.
    Add {
        /// Full address (`name@domain`).
        address: String,
        /// Password (at least `registration.password_min_length` long);
        /// generated when absent.
        #[arg(long, env = "MADMAIL_PASSWORD")]
        password: Option<String>,
    },
    /// Delete an account and all its mail.
    Delete {
        /// Full address.
        address: String,
    },
}

pub async fn run(settings: Settings, command: AccountsCommand) -> anyhow::Result<ExitCode> {
    let store = crate::admin::open_store(&settings).await?;
    let accounts = Accounts::new(store.clone(), Arc::new(settings));
    match command {
        AccountsCommand::List => {
            for account in store.accounts().await? {
                println!("{}", account.address);
            }
        }
        AccountsCommand::Add { address, password } => {
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| accounts.generate().1);
            let added = accounts
                .add(&address, &password)
                .await
                .map_err(|e| match e {
                    chatmail_accounts::LoginError::Invalid => anyhow::anyhow!(
                        "{address}: refused: the domain must be this relay's, the local part \
                     must follow the registration rules and the password must be long enough"
                    ),
                    other => other.into(),
                })?;
            if !added {
                eprintln!("{address} exists already");
                return Ok(ExitCode::FAILURE);
            }
            match generated {
                true => println!("{address} {password}"),
                false => println!("{address}"),
            }
        }
        AccountsCommand::Delete { address } => {
            let address = address.to_ascii_lowercase();
            if !store.delete_account(&address).await? {
                eprintln!("{address}: no such account");
                return Ok(ExitCode::FAILURE);
            }
            println!("deleted {address}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
