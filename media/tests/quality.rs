//! E-model (ITU-T G.107) tests.

use media::codec::Codec;
use media::quality::{EModel, LossTracker, burst_ratio, mos_from_r};

#[test]
fn default_parameters_give_r_93_2_and_mos_4_41() {
    // G.107 §7.7: the default values give R = 93.2; Annex B maps that to MOS 4.41.
    let m = EModel::default();
    let r = m.r_factor();
    assert!((r - 93.2).abs() < 0.05, "R = {r}");
    let mos = m.mos();
    assert!((mos - 4.41).abs() < 0.005, "MOS = {mos}");
    assert_eq!(EModel::for_codec(Codec::Pcmu, false), m);
}

#[test]
fn mos_mapping_follows_annex_b() {
    assert_eq!(mos_from_r(-5.0), 1.0);
    assert_eq!(mos_from_r(0.0), 1.0);
    assert_eq!(mos_from_r(100.0), 4.5);
    assert_eq!(mos_from_r(120.0), 4.5);
    let r: f64 = 80.0;
    let expect = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6;
    assert!((mos_from_r(r) - expect).abs() < 1e-12);
    assert!((mos_from_r(50.0) - 2.58).abs() < 0.01);
}

#[test]
fn mos_strictly_decreases_with_packet_loss() {
    for plc in [false, true] {
        let mut last = f64::MAX;
        for ppl in [0.0, 1.0, 2.0, 5.0, 10.0, 20.0] {
            let mos = EModel::for_codec(Codec::Pcmu, plc)
                .with_loss(ppl, 1.0)
                .mos();
            assert!(
                mos < last,
                "plc {plc}: MOS {mos} at {ppl}% not below {last}"
            );
            last = mos;
        }
    }
}

#[test]
fn plc_makes_loss_hurt_less() {
    let without = EModel::for_codec(Codec::Pcma, false)
        .with_loss(2.0, 1.0)
        .r_factor();
    let with = EModel::for_codec(Codec::Pcma, true)
        .with_loss(2.0, 1.0)
        .r_factor();
    assert!(with > without + 10.0, "with PLC {with}, without {without}");
    // G.113 values: 2 % random loss with PLC gives Ie,eff = 95·2/(2+25.1) ≈ 7.0.
    let base = EModel::default().r_factor();
    assert!((base - with - 95.0 * 2.0 / 27.1).abs() < 1e-9);
}

#[test]
fn bursty_loss_lowers_mos() {
    let random = EModel::for_codec(Codec::Pcmu, true)
        .with_loss(5.0, 1.0)
        .mos();
    let bursty = EModel::for_codec(Codec::Pcmu, true)
        .with_loss(5.0, 2.5)
        .mos();
    assert!(bursty < random, "bursty {bursty} vs random {random}");
}

#[test]
fn one_way_delay_above_about_177ms_lowers_r() {
    let base = EModel::default();
    let r = |d: f64| base.with_one_way_delay(d).r_factor();
    // Below the knee only the (well-cancelled, TELR 65 dB) echo terms cost a little.
    assert!(r(0.0) - r(100.0) < 3.0, "R at 100 ms: {}", r(100.0));
    let mut last = r(100.0);
    for d in [150.0, 177.3, 200.0, 300.0, 400.0] {
        assert!(r(d) < last, "R {} at {d} ms not below {last}", r(d));
        last = r(d);
    }
    // Above ~177 ms the absolute-delay term Idd dominates: R falls several times faster per
    // millisecond than below it (Cole & Rosenbluth's 0.024 vs 0.134 per ms).
    let slope_below = (r(100.0) - r(150.0)) / 50.0;
    let slope_above = (r(200.0) - r(300.0)) / 100.0;
    assert!(
        slope_above > 3.0 * slope_below,
        "{slope_below} vs {slope_above}"
    );
    assert!(
        r(0.0) - r(300.0) > 15.0,
        "300 ms costs {}",
        r(0.0) - r(300.0)
    );
    // With only the absolute delay (echo paths left at 0 ms), nothing is lost up to 100 ms.
    let mut ta_only = base;
    ta_only.ta = 100.0;
    assert_eq!(ta_only.r_factor(), base.r_factor());
}

#[test]
fn burst_ratio_from_mean_burst_length() {
    // Random loss at 10 %: expected burst length 1/(1 − 0.1) gives BurstR 1.
    assert!((burst_ratio(10.0, 1.0 / 0.9) - 1.0).abs() < 1e-12);
    assert!((burst_ratio(10.0, 3.0) - 2.7).abs() < 1e-12);
    assert_eq!(burst_ratio(0.0, 0.0), 1.0);
}

#[test]
fn loss_tracker_counts_loss_and_bursts() {
    let mut t = LossTracker::new();
    // 20 slots: bursts of 3 and 1 lost.
    for i in 0..20 {
        t.observe(matches!(i, 5..=7 | 15));
    }
    assert!((t.loss_percent() - 20.0).abs() < 1e-12);
    assert!((t.mean_burst_len() - 2.0).abs() < 1e-12);
    assert!((t.burst_ratio() - 1.6).abs() < 1e-12);
    t.observe_lost(4);
    assert!((t.mean_burst_len() - 8.0 / 3.0).abs() < 1e-12);
    let m = t.emodel(Codec::Pcmu, true, 50.0);
    assert!(m.mos() < EModel::default().mos());
}
