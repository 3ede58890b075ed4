//! `ktrack report` (the study as one self-contained HTML file) and `ktrack ui` (the same page
//! served live from the home, read-only, on loopback unless `--bind` says otherwise).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::Env;
use super::compare::Intervals;
use crate::context::Ktrack;
use crate::report::html::{self, ReportOptions};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Only this sweep (default: every run in the home).
    #[arg(long)]
    pub sweep: Option<String>,
    #[command(flatten)]
    pub intervals: Intervals,
    /// The HTML file to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn report(env: &Env, args: ReportArgs) -> Result<()> {
    let k = env.open()?;
    let opts = ReportOptions {
        sweep: args.sweep,
        bootstrap: args.intervals.bootstrap,
        level: args.intervals.level,
        seed: args.intervals.seed,
        live: false,
    };
    let page = html::build(&k, &opts).context("could not build the report")?;
    crate::output::write_atomic(&args.output, page.as_bytes())
        .with_context(|| format!("could not write `{}`", args.output.display()))?;
    env.printer.status(
        "Reported",
        format!("{} ({} KiB)", args.output.display(), page.len() / 1024),
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// Only this sweep (default: every run in the home).
    #[arg(long)]
    pub sweep: Option<String>,
    /// The port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8750)]
    pub port: u16,
    /// The address to listen on. Anything but loopback exposes the study to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    #[command(flatten)]
    pub intervals: Intervals,
}

struct Served {
    k: Ktrack,
    opts: ReportOptions,
    /// The last page and the status it was made at: a page is remade only when runs changed.
    page: Mutex<Option<(String, String)>>,
}

impl Served {
    fn page(&self) -> Result<String, String> {
        let status =
            html::status_json(&self.k, self.opts.sweep.as_deref()).map_err(|e| e.to_string())?;
        let mut cached = self.page.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, page)) = cached.as_ref()
            && *s == status
        {
            return Ok(page.clone());
        }
        let page = html::build(&self.k, &self.opts).map_err(|e| e.to_string())?;
        *cached = Some((status, page.clone()));
        Ok(page)
    }
}

pub fn ui(env: &Env, args: UiArgs) -> Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let k = env.open()?;
    let served = Arc::new(Served {
        k,
        opts: ReportOptions {
            sweep: args.sweep,
            bootstrap: args.intervals.bootstrap,
            level: args.intervals.level,
            seed: args.intervals.seed,
            live: true,
        },
        page: Mutex::new(None),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the server's runtime")?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("could not listen on {addr}"))?;
    let local = listener.local_addr()?;
    if !args.bind.is_loopback() {
        env.printer.status(
            "Warning",
            format!("listening on {local}, reachable from other machines"),
        );
    }
    env.printer.status(
        "Serving",
        format!("http://{local}/ (read-only; Ctrl-C stops)"),
    );
    let blocking = |s: Arc<Served>, f: fn(&Served) -> Result<String, String>| async move {
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    let (a, b) = (served.clone(), served);
    let app = axum::Router::new()
        .route(
            "/",
            get(move || async move {
                match blocking(a, Served::page).await {
                    Ok(p) => {
                        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], p).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            }),
        )
        .route(
            "/api/status",
            get(move || async move {
                let f: fn(&Served) -> Result<String, String> =
                    |s| html::status_json(&s.k, s.opts.sweep.as_deref()).map_err(|e| e.to_string());
                match blocking(b, f).await {
                    Ok(j) => ([(header::CONTENT_TYPE, "application/json")], j).into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            }),
        );
    let interrupt = env.interrupt.clone();
    rt.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                while !interrupt.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            })
            .await
    })
    .context("the server stopped")?;
    Ok(())
}
