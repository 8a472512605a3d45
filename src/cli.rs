//! The command line: `serve` (the default), `migrate`, `rotate-key`, `admin create`,
//! `admin reset-password`, `org set-plan` and `dev seed`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::app::Application;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, Settings, load_secret};
use crate::db::{self, Db};
use crate::domain::{Email, NewPassword, OrganizationName, Role};
use crate::ids::UserId;

#[derive(Parser)]
#[command(name = "mcp-platform", version, about = "MCP services for your organization, safely")]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard and the gateway (the default)
    Serve,
    /// Apply database migrations and exit
    Migrate,
    /// Add a new key for sealing service tokens and re-seal every stored token with it, in
    /// batches, while the platform keeps running
    RotateKey {
        /// Do not add a key: finish re-sealing under the current one (after an interruption)
        #[arg(long)]
        resume: bool,
        /// Tokens re-sealed per transaction
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: i64,
    },
    /// Manage accounts from the command line
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage organizations from the command line
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Tools for development and test databases
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Put an organization on a plan: a built-in one (free, standard, team, enterprise) or one
    /// from the operator's file
    SetPlan {
        #[arg(long)]
        org: String,
        #[arg(long)]
        plan: String,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Fill an organization (created when no organization has this name) with realistic request
    /// logs and their usage roll-ups: several services, tools, members and keys, a few percent
    /// errors. For test databases only.
    Seed {
        #[arg(long)]
        org: String,
        /// Request-log rows to write
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        requests: u64,
        /// Days back from now the rows spread over
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        /// Write even when the organization already has request logs
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin; the organization is created when no organization has this name.
    /// The password is read from standard input.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
    },
    /// Print a single-use link, valid for 24 hours, with which this account's owner chooses a
    /// new password (on the public URL); their earlier links stop working
    ResetPassword {
        #[arg(long)]
        email: String,
    },
}

/// Errors that end the process: bad configuration (exit 2) or a failure while running (exit 1).
enum Failure {
    Config(ConfigError),
    Run(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Run(e)
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = cli.settings;
    settings.secret_key = std::env::var("MCP_PLATFORM_SECRET_KEY").ok().map(SecretString::from);
    settings.metrics_token = std::env::var("MCP_PLATFORM_METRICS_TOKEN").ok().map(SecretString::from);
    let result = Config::from_settings(settings).map_err(Failure::from).and_then(|config| {
        crate::telemetry::logging::init(config.log_format, &config.instance);
        // The HTTP workers run their own runtimes; this one drives start-up, the request-log
        // writer and upkeep, which need one thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(execute(cli.command.unwrap_or(Command::Serve), config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("error: invalid configuration: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, config: Config) -> Result<(), Failure> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            db.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::RotateKey { resume, batch_size } => rotate_key(config, resume, batch_size).await,
        Command::Admin { command: AdminCommand::Create { org, email } } => {
            admin_create(config, &org, &email).await
        }
        Command::Admin { command: AdminCommand::ResetPassword { email } } => {
            reset_password(config, &email).await
        }
        Command::Org { command: OrgCommand::SetPlan { org, plan } } => set_plan(config, &org, &plan).await,
        Command::Dev { command: DevCommand::Seed { org, requests, days, force } } => {
            let organization = OrganizationName::parse(&org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            let plan = crate::seed::SeedPlan { organization, requests, days, force };
            let report = crate::seed::seed(&db, &plan, SystemClock.now()).await;
            db.close().await;
            let report = report?;
            eprintln!(
                "wrote {} rows in {:.1} s ({:.0} rows/s)",
                report.rows,
                report.seconds,
                report.rows as f64 / report.seconds.max(1e-9)
            );
            Ok(())
        }
    }
}

async fn serve(config: Config) -> Result<(), Failure> {
    let (master, created) = load_secret(&config.secret, true)?;
    if let Some(path) = created {
        tracing::info!(path = %path.display(), "created a new secret key (mode 0600); keep it safe and back it up");
    }
    let app = Application::build(config.clone(), &master, Arc::new(SystemClock)).await?;
    let url = config.display_url(app.port());
    tracing::info!("MCP Platform is running: open {url}");
    app.run_until_stopped().await.context("server failed")?;
    Ok(())
}

async fn rotate_key(config: Config, resume: bool, batch_size: i64) -> Result<(), Failure> {
    let (master, _) = load_secret(&config.secret, false)?;
    let db = Db::connect(&config.database).await?;
    db.migrate().await?;
    let keyring = master.token_keyring();
    if !resume {
        let key_id = keyring.add_key(&db, SystemClock.now()).await?;
        eprintln!("added token key {key_id}; new tokens are sealed with it from now on");
    }
    let progress =
        crate::crypto::rotation::reseal_tokens(&db, &keyring, &SystemClock, batch_size, None).await?;
    let services = crate::crypto::headers::reseal(&keyring, &db, SystemClock.now()).await?;
    db.close().await;
    eprintln!(
        "re-sealed {} tokens; {} could not be opened; {} remain under older keys",
        progress.resealed, progress.failed, progress.remaining
    );
    eprintln!("re-sealed the header values of {services} services");
    if progress.failed > 0 || progress.remaining > 0 {
        return Err(anyhow::anyhow!(
            "rotation incomplete: see the log above, then run `rotate-key --resume`"
        )
        .into());
    }
    Ok(())
}

async fn admin_create(config: Config, org: &str, email: &str) -> Result<(), Failure> {
    let name = OrganizationName::parse(org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let password = read_password(&email)?;
    let password = NewPassword::parse(&password).map_err(|e| anyhow::anyhow!("password: {e}"))?;

    let db = Db::connect(&config.database).await?;
    db.migrate().await?;
    let passwords = crate::auth::password::Passwords::new()?;
    let hash = passwords.hash(password.into_secret()).await?;
    let now = SystemClock.now();
    let mut tx = db.begin().await.context("cannot start a transaction")?;
    let organization_id = db::organizations::find_or_create(tx.conn(), &name, email.as_str(), now)
        .await
        .context("cannot find or create the organization")?;
    let user = db::users::NewUser {
        id: UserId::new(),
        organization_id,
        email: &email,
        password_hash: &hash,
        role: Role::Admin,
    };
    if let Err(e) = db::users::insert(tx.conn(), user, now).await {
        if db::users::email_taken(&e) {
            return Err(anyhow::anyhow!("--email: a user with the email {email} already exists").into());
        }
        return Err(anyhow::Error::new(e).context("cannot create the user").into());
    }
    db::organizations::claim_installation(tx.conn(), now).await.context("cannot record the installation")?;
    tx.commit().await.context("cannot commit")?;
    db.close().await;
    eprintln!("created admin {email} in organization \"{}\"", name.as_str());
    Ok(())
}

async fn reset_password(config: Config, email: &str) -> Result<(), Failure> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let db = Db::connect(&config.database).await?;
    db.migrate().await?;
    let now = SystemClock.now();
    let mut tx = db.begin().await.context("cannot start a transaction")?;
    let Some(account) = db::users::credentials_by_email(tx.conn(), &email).await.context("lookup failed")?
    else {
        return Err(anyhow::anyhow!("--email: there is no account with the email {email}").into());
    };
    if !account.is_active {
        return Err(anyhow::anyhow!(
            "--email: the account {email} is deactivated; an admin of its organization reactivates it first"
        )
        .into());
    }
    let base = config.origin(config.bind.port());
    let link = crate::web::password_reset::issue_link(
        tx.conn(),
        account.organization_id,
        account.id,
        None,
        &base,
        now,
    )
    .await
    .context("cannot store the link")?;
    let entry = db::audit::Entry {
        organization_id: Some(account.organization_id),
        target_id: Some(account.id.to_string()),
        after: Some(serde_json::json!({ "email": email.as_str(), "reset": link.id, "by": "operator" })),
        ..db::audit::Entry::new(db::audit::Action::PasswordResetIssued)
    };
    db::audit::record(tx.conn(), entry, now).await.context("cannot audit")?;
    tx.commit().await.context("cannot commit")?;
    db.close().await;
    eprintln!(
        "a password-reset link for {email}, valid for {} hours (it works once; their sessions end when it is used):",
        crate::web::password_reset::RESET_HOURS
    );
    println!("{}", link.url);
    Ok(())
}

async fn set_plan(config: Config, org: &str, plan: &str) -> Result<(), Failure> {
    let name = OrganizationName::parse(org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    if config.plans.find(plan).is_none() {
        let known = config.plans.names().join(", ");
        return Err(anyhow::anyhow!("--plan: there is no plan \"{plan}\"; the plans are {known}").into());
    }
    let db = Db::connect(&config.database).await?;
    db.migrate().await?;
    let now = SystemClock.now();
    let mut tx = db.begin().await.context("cannot start a transaction")?;
    let Some(organization) =
        db::organizations::find_by_slug(tx.conn(), &name.slug()).await.context("lookup failed")?
    else {
        return Err(anyhow::anyhow!("--org: there is no organization named \"{}\"", name.as_str()).into());
    };
    db::organizations::set_plan(tx.conn(), organization.id, plan, now)
        .await
        .context("cannot change the plan")?;
    let mut entry = db::audit::Entry::new(db::audit::Action::PlanChanged);
    entry.organization_id = Some(organization.id);
    entry.target_id = Some(organization.id.to_string());
    entry.before = Some(serde_json::json!({ "plan": organization.plan }));
    entry.after = Some(serde_json::json!({ "plan": plan }));
    db::audit::record(tx.conn(), entry, now).await.context("cannot record the change")?;
    tx.commit().await.context("cannot commit")?;
    db.close().await;
    eprintln!("\"{}\" is now on the {plan} plan (was {})", name.as_str(), organization.plan);
    Ok(())
}

/// Reads the password from standard input without echo on a terminal, or as one line from a pipe.
fn read_password(email: &Email) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Password for {email}: "))
            .context("cannot read the password");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
