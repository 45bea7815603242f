//! The chaos suite's short form (docs/chaos.md): about a minute of faults on a seeded schedule
//! against real `comet serve`, `redis-server` and `redis-sentinel` processes, then the checker:
//! no silent loss, no duplicate, no reordering, no false gap. `COMET_CHAOS_SEED` and
//! `COMET_CHAOS_SECONDS` change the seed (default 1) and the length (default 60); the long form
//! is `target/release/comet-chaos --seconds 600 --seed N`.

use comet_chaos::{Options, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_promise_holds_under_a_minute_of_faults() {
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let opts = Options {
        seconds: env("COMET_CHAOS_SECONDS", 60),
        seed: env("COMET_CHAOS_SEED", 1),
        comet: env!("CARGO_BIN_EXE_comet").into(),
        scenarios: vec![Scenario::Redis, Scenario::Sentinel, Scenario::Memory, Scenario::Durable],
    };
    let outcomes = comet_chaos::run(&opts)
        .await
        .expect("the chaos run could not be set up");
    let table = comet_chaos::table(&outcomes);
    println!("seed {}, {} s\n{table}", opts.seed, opts.seconds);
    for o in &outcomes {
        assert!(
            o.refused.is_empty(),
            "{}: publishes refused: {:?}",
            o.scenario.name(),
            o.refused
        );
        assert!(
            o.acknowledged > 0,
            "{}: nothing was published\n{table}",
            o.scenario.name()
        );
        assert!(
            o.verdict.delivered > 0,
            "{}: nothing was delivered\n{table}",
            o.scenario.name()
        );
        assert!(
            o.holds(),
            "{}: the delivery promise did not hold (seed {})\n{table}",
            o.scenario.name(),
            opts.seed
        );
    }
}
