fn main() {
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let (sc, pc) = slimebench::sim::swarm::scenario_for_seed(seed);
    println!(
        "{:#?}\n{:?}",
        (
            sc.worker_start,
            sc.driver_start,
            &sc.actions,
            &sc.preload,
            &sc.store_hang,
            &sc.link,
            sc.store_latency
        ),
        pc
    );
    let o = slimebench::sim::run(&sc);
    println!(
        "driver: {:?}\nworker: {:?}",
        o.driver.as_ref().err(),
        o.worker.as_ref().err()
    );
    println!("done d={:?} w={:?}", o.driver_done, o.worker_done);
}
