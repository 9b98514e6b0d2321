//! Replicas and crashes under load (see `integration::soak`): the short version here, the
//! issue's full one with `BERTH_SOAK_FULL=1`.

use integration::soak::{SoakOptions, run};

#[test]
fn acknowledged_pushes_survive_killed_replicas_and_online_gc() {
    let o = if std::env::var_os("BERTH_SOAK_FULL").is_some() {
        SoakOptions::full()
    } else {
        SoakOptions::short()
    };
    let started = std::time::Instant::now();
    let r = run(&o);
    eprintln!("soak {o:?} took {:?}: {r:#?}", started.elapsed());
    assert!(r.lost.is_empty(), "acknowledged pushes lost: {:#?}", r.lost);
    assert!(r.kills >= 3, "replicas were not killed: {}", r.kills);
    assert!(r.acknowledged >= 10, "too little got through: {r:?}");
    assert_eq!(r.verified_pulls, r.acknowledged + r.acknowledged_kept);
    assert!(r.swept > 0, "the collectors removed nothing: {r:?}");
    assert!(
        r.uncollected.is_empty(),
        "deleted pushes never collected: {:?}",
        r.uncollected
    );
}
