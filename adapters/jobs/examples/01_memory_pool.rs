//! A job pool bound to a lifecycle, over the in-memory source: eight jobs run three at a time; a
//! stop arrives while some still run; they finish during the drain, except a long report that
//! checkpoints and hands itself back; the pool's exit hook closes the source and logs the
//! counters; `main` exits with the outcome's status (0). Ctrl-C works the same way.
//!
//! `RUST_LOG=info cargo run -p lifecycle-hooks-jobs --example 01_memory_pool`

use std::time::Duration;

use lifecycle_hooks::{Lifecycle, Outcome};
use lifecycle_hooks_jobs::{Job, JobContext, JobPool, MemorySource};

async fn handle(job: Job, ctx: JobContext) -> Result<(), std::io::Error> {
    if job.id() == "report" {
        // A long job: one page per 100 ms, checkpointing when the service stops.
        let mut page: u32 = std::str::from_utf8(job.payload())
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        while page < 1_000 {
            if ctx.is_stopping() {
                println!("report: stopping at page {page}, handing it back");
                ctx.requeue(job.with_payload(page.to_string()));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            page += 1;
        }
        return Ok(());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("{}: done", job.id());
    Ok(())
}

#[tokio::main]
async fn main() -> Outcome {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let source = MemorySource::new(100);
    source.push(Job::new("report", "0")).await.expect("room");
    for n in 1..=7 {
        source
            .push(Job::new(format!("mail-{n}"), ""))
            .await
            .expect("room");
    }
    let pool = JobPool::builder(source.clone())
        .concurrency(3)
        .build(handle);
    let lifecycle = Lifecycle::builder()
        .budget(Duration::from_secs(5))
        // Runs after the pool's close: the final counters.
        .on_exit("report_counters", {
            let pool = pool.clone();
            move |_ctx| {
                let counters = pool.counters();
                async move { println!("exit: {counters:?}") }
            }
        })
        // Registered after its exit hook, so the pool closes first (exit hooks run in reverse).
        .hooks(pool.hooks())
        .build()
        .expect("a valid lifecycle graph");
    let handle = lifecycle.handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("stopping");
        handle.stop();
    });
    let outcome = lifecycle.run().await;
    println!(
        "{outcome}; handed back: {:?}; still queued: {:?}",
        outcome.handed_back(),
        source.queued_ids()
    );
    outcome
}
