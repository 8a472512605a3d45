//! The usage-pages benchmark: seeds an organization with `--rows` request-log rows over 90 days
//! (`mcp-platform dev seed`), starts the platform on it, signs in as an admin and times the pages
//! that read the traffic: home, `/usage` at each range and for one service, `/logs` (first page,
//! 1,000 pages deep by cursor, a rare filter, a correlation id) and a 1-million-row export. For
//! each: p50 and p95 over `--repeat` requests (measured on loopback by the client) and the
//! page's size; for the export its time, rows and the server's peak memory before and after.
//! Also the database's bytes per logged call. On SQLite, and on PostgreSQL as well when
//! `TEST_POSTGRES_URL` is set (a database is made for the run and dropped after). The last line
//! is one JSON object.
//!
//! cargo build --release --features test-upstream --bins && target/release/mcp-pages-bench [--rows 10000000 --repeat 20]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

const DAYS: u64 = 90;
const ORG: &str = "Bench Pages";
const ADMIN: &str = "bench-admin@bench.example";
const PASSWORD: &str = "a long bench password";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn platform() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.parent().context("no directory")?.join("mcp-platform");
    if !path.exists() {
        bail!("{} is missing: build every binary", path.display());
    }
    Ok(path)
}

/// Runs the platform binary to its end with these variables, arguments and input.
fn run(env: &[(&str, &str)], args: &[&str], input: &str) -> anyhow::Result<String> {
    let mut child = Command::new(platform()?)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!("mcp-platform {args:?} failed: {said}");
    }
    Ok(said)
}

fn peak_memory_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A signed-in browser without a cookie jar: the session cookie is carried by hand.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browser {
    async fn sign_in(base: &str) -> anyhow::Result<Browser> {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let form = client.get(format!("{base}/login")).send().await?;
        let cookie = session_cookie(&form).context("no session cookie")?;
        let html = form.text().await?;
        let token = html
            .split("name=\"csrf_token\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .context("no csrf token")?;
        let body =
            serde_urlencoded::to_string([("csrf_token", token), ("email", ADMIN), ("password", PASSWORD)])?;
        let done = client
            .post(format!("{base}/login"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", base)
            .body(body)
            .send()
            .await?;
        if done.status() != 303 {
            bail!("sign-in failed: {}", done.status());
        }
        let cookie = session_cookie(&done).unwrap_or(cookie);
        Ok(Browser { client, base: base.to_owned(), cookie })
    }

    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let response =
            self.client.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await?;
        if !response.status().is_success() {
            bail!("{path}: {}", response.status());
        }
        Ok(response.text().await?)
    }
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("mcp_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// p50, p95 (ms) and size of `repeat` requests of a page, after two to warm up.
async fn timed(browser: &Browser, name: &str, path: &str, repeat: u64) -> anyhow::Result<Value> {
    for _ in 0..2 {
        browser.get(path).await?;
    }
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..repeat {
        let started = Instant::now();
        size = browser.get(path).await?.len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
    println!("{name:<34} p50 {p50:>7.2} ms   p95 {p95:>7.2} ms   {:>6.1} KB   {path}", size as f64 / 1000.0);
    Ok(json!({ "page": name, "path": path, "p50_ms": p50, "p95_ms": p95, "bytes": size }))
}

fn row_ids(page: &str) -> Vec<String> {
    page.split("<a href=\"/logs/")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .filter(|id| id.len() == 36 && !id.contains('?'))
        .map(str::to_owned)
        .collect()
}

fn next_link(page: &str) -> Option<String> {
    let before = &page[..page.find("rel=\"next\"")?];
    Some(before.rsplit("href=\"").next()?.split('"').next()?.replace("&#38;", "&"))
}

/// Seeds, serves and measures one database; the figures as JSON.
async fn measure(database_url: &str, data_dir: &Path, rows: u64, repeat: u64) -> anyhow::Result<Value> {
    let env = [("DATABASE_URL", database_url), ("MCP_PLATFORM_DATA_DIR", data_dir.to_str().context("path")?)];
    run(&env, &["admin", "create", "--org", ORG, "--email", ADMIN], &format!("{PASSWORD}\n"))?;
    let seeding = Instant::now();
    let rows_s = rows.to_string();
    let days_s = DAYS.to_string();
    let said = run(&env, &["dev", "seed", "--org", ORG, "--requests", &rows_s, "--days", &days_s], "")?;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    println!(
        "seeded {rows} rows in {seed_seconds:.1} s ({:.0} rows/s): {}",
        rows as f64 / seed_seconds,
        said.lines().last().unwrap_or("")
    );

    let mut server = Command::new(platform()?)
        .envs(env.iter().copied())
        .env("MCP_PLATFORM_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn,mcp_platform::cli=info")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = server.stderr.take().context("stderr")?;
    let pid = server.id();
    let server = Killed(server);
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().context("the platform stopped")??;
        if let Some(url) = line.split("open ").nth(1) {
            break url.trim().trim_end_matches('/').to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let browser = Browser::sign_in(&base).await?;

    let mut pages = Vec::new();
    pages.push(timed(&browser, "home", "/", repeat).await?);
    for range in ["24h", "7d", "30d", "90d", "12m"] {
        pages.push(
            timed(&browser, &format!("usage {range}"), &format!("/usage?range={range}"), repeat).await?,
        );
    }
    pages.push(
        timed(&browser, "usage 90d, one service (by tool)", "/usage?range=90d&service=github", repeat)
            .await?,
    );
    pages.push(timed(&browser, "logs, first page", "/logs", repeat).await?);

    // 1,000 pages deep, by following each page's cursor.
    let walking = Instant::now();
    let mut path = "/logs".to_owned();
    for _ in 0..1_000 {
        let page = browser.get(&path).await?;
        path = next_link(&page).context("the walk ended early")?;
    }
    let walk_seconds = walking.elapsed().as_secs_f64();
    println!("walked 1,000 pages in {walk_seconds:.1} s");
    let deep = timed(&browser, "logs, 1,000 pages deep", &path, repeat).await?;
    pages.push(deep);
    let deep_page = browser.get(&path).await?;
    let correlation = row_ids(&deep_page).first().cloned().context("no row on the deep page")?;
    let rare = format!("/logs?tool={}", mcp_platform::seed::RARE_TOOL);
    pages.push(timed(&browser, "logs, rare filter", &rare, repeat).await?);
    pages.push(
        timed(&browser, "logs, correlation id", &format!("/logs?correlation={correlation}"), repeat).await?,
    );
    pages.push(timed(&browser, "a call's page", &format!("/logs/{correlation}"), repeat).await?);

    // An export of about 1 million rows: the days that hold them.
    let days_back = (DAYS as f64 * (1_000_000f64 / rows as f64).min(1.0)).max(1.0);
    let from = (chrono::Utc::now() - chrono::Duration::seconds((days_back * 86_400.0) as i64))
        .format("%Y-%m-%dT%H:%M");
    let before = peak_memory_kib(pid).unwrap_or(0);
    let exporting = Instant::now();
    let mut response = browser
        .client
        .get(format!("{base}/logs/export.csv?from={from}"))
        .header("cookie", &browser.cookie)
        .send()
        .await?;
    let (mut bytes, mut lines_out) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        lines_out += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let export_seconds = exporting.elapsed().as_secs_f64();
    let after = peak_memory_kib(pid).unwrap_or(0);
    println!(
        "export: {} lines, {:.0} MB in {export_seconds:.1} s; server peak memory {:.1} MB before, {:.1} MB after",
        lines_out,
        bytes as f64 / 1e6,
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    drop(server);
    Ok(json!({
        "rows": rows,
        "seed_seconds": seed_seconds,
        "seed_rows_per_second": rows as f64 / seed_seconds,
        "pages": pages,
        "walk_1000_pages_seconds": walk_seconds,
        "export": { "lines": lines_out, "bytes": bytes, "seconds": export_seconds, "peak_kib_before": before, "peak_kib_after": after },
    }))
}

/// On-disk bytes of the request log and its indexes, and of the whole file, per row (SQLite).
fn sqlite_bytes(file: &Path, rows: u64) -> anyhow::Result<Value> {
    let whole = std::fs::metadata(file)?.len();
    Ok(json!({ "file_bytes_per_row": whole as f64 / rows as f64 }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows = flag(&args, "--rows", 1_000_000);
    let repeat = flag(&args, "--repeat", 20);
    let dir = std::env::temp_dir().join(format!("mcp-pages-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bench.db");
    println!("== SQLite, {rows} rows over {DAYS} days");
    let sqlite = measure(&format!("sqlite://{}", file.display()), &dir, rows, repeat).await;
    let sqlite = sqlite.and_then(|mut figures| {
        figures["bytes"] = sqlite_bytes(&file, rows)?;
        Ok(figures)
    });
    let mut report = json!({ "sqlite": sqlite.as_ref().map_err(|e| e.to_string()).ok() });
    if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
        println!("== PostgreSQL, {rows} rows over {DAYS} days");
        let name = format!("pages_bench_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::PgPool::connect(&url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
        let database = match url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => bail!("TEST_POSTGRES_URL has no database name"),
        };
        let postgres = measure(&database, &dir, rows, repeat).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&admin)
            .await?;
        report["postgres"] = json!(postgres.as_ref().map_err(|e| e.to_string()).ok());
        if let Err(e) = postgres {
            eprintln!("PostgreSQL: {e:#}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = &sqlite {
        eprintln!("SQLite: {e:#}");
    }
    println!("{report}");
    Ok(())
}
