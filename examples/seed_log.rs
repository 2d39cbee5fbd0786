fn main() {
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let from: u64 = std::env::args().nth(2).map_or(0, |s| s.parse().unwrap());
    let to: u64 = std::env::args().nth(3).map_or(u64::MAX, |s| s.parse().unwrap());
    let (mut sc, _) = slimebench::sim::swarm::scenario_for_seed(seed);
    sc.heal_then_rerun = false;
    let o = slimebench::sim::run(&sc);
    let _ = o;
    // re-run with a big tail: the log keeps the last 4096 lines
    let o = slimebench::sim::run(&sc);
    for l in o.log_tail.iter() {
        let t: u64 = l.trim_start().split(' ').next().unwrap().parse().unwrap();
        if t >= from && t <= to {
            println!("{l}");
        }
    }
}
