//! Development: ResNet50 (b=8) per-layer forward GFLOP/s of cxr-ops and the whole inference, for tuning. Prints
//! wall-clock and process-CPU-time rates (the latter is robust to other load on a shared machine).
use cxr_ops::bench::{self, Ops};

fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn minflt() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    f[7].parse().unwrap()
}

fn time<F: FnMut()>(min_s: f64, mut f: F) -> (f64, f64) {
    f();
    let (c0, t0) = (cpu_s(), std::time::Instant::now());
    let mut n = 0;
    while t0.elapsed().as_secs_f64() < min_s || n < 2 {
        f();
        n += 1;
    }
    (
        t0.elapsed().as_secs_f64() / n as f64,
        (cpu_s() - c0) / n as f64,
    )
}

fn main() -> candle_core::Result<()> {
    // The same allocator settings as xtask, so that the figures match `cargo xtask bench ops`.
    cxr_ops::alloc::retain_freed_memory();
    let min_s: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    let only_net = std::env::args().any(|a| a == "net");
    // `only=TEXT`: just the layers whose name contains TEXT (then no whole-network timing).
    let only: Option<String> =
        std::env::args().find_map(|a| a.strip_prefix("only=").map(str::to_string));
    // `unet`: the UNet's layers (base 16, 256x256, batch 4) instead of ResNet50's.
    let layers = if std::env::args().any(|a| a == "unet") {
        bench::unet_layers(4, 16, 256)
    } else {
        bench::resnet50_layers(8)
    };
    let (mut tw, mut tc, mut fl) = (0.0, 0.0, 0.0);
    for l in layers.iter().filter(|l| {
        !only_net
            && !std::env::args().any(|a| a.starts_with("ab="))
            && only.as_ref().is_none_or(|o| l.name.contains(o.as_str()))
    }) {
        let x = bench::uniform(&[l.n, l.cin, l.h, l.w], 1.0, 1)?;
        let w = bench::uniform(&[l.cout, l.cin, l.k, l.k], 0.1, 2)?;
        let cfg = cxr_ops::Conv2dCfg {
            stride: l.stride,
            padding: l.pad,
            dilation: 1,
            groups: 1,
        };
        let (sw, sc) = time(min_s, || {
            drop(cxr_ops::conv2d_frozen(&x, &w, None, cfg).unwrap())
        });
        tw += sw * l.count as f64;
        tc += sc * l.count as f64;
        fl += l.flops() * l.count as f64;
        println!(
            "{:<24} x{} {:8.2} ms {:6.1} GFLOP/s wall {:6.1} per CPU-s",
            l.name,
            l.count,
            sw * 1e3,
            l.flops() / sw / 1e9,
            l.flops() / sc / 1e9
        );
    }
    if !only_net {
        println!(
            "convs: {tw:.3} s per batch, {:.1} GFLOP/s wall, {:.1} per CPU-s",
            fl / tw / 1e9,
            fl / tc / 1e9
        );
    }
    if only.is_some() {
        return Ok(());
    }
    let net = bench::ResNet50::new()?;
    if std::env::args().any(|a| a == "seq") {
        // Every batch's time in order, with the process's CPU time and minor page faults over it.
        let x = bench::uniform(&[8, 3, 224, 224], 1.0, 3)?;
        for _ in 0..20 {
            let (c0, t0) = (cpu_s(), std::time::Instant::now());
            let f0 = minflt();
            drop(net.infer(&x, Ops::Ours)?);
            println!(
                "{:.3} s wall, {:.2} CPU-s, {} minor faults",
                t0.elapsed().as_secs_f64(),
                cpu_s() - c0,
                minflt() - f0
            );
        }
        return Ok(());
    }
    if let Some(what) = std::env::args().find_map(|a| a.strip_prefix("ab=").map(str::to_string)) {
        // In-process A/B, alternating batch by batch: the feature on (A) and off (B). The machine's speed drifts
        // by 10-20 % over seconds, which alternation cancels. `ab=winograd`.
        let x = bench::uniform(&[8, 3, 224, 224], 1.0, 3)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..24 {
            let on = round % 2 == 0;
            match what.as_str() {
                "winograd" => cxr_ops::set_winograd(on),
                other => panic!("ab={other}: only ab=winograd"),
            }
            let s = std::time::Instant::now();
            drop(net.infer(&x, Ops::Ours)?);
            let dt = s.elapsed().as_secs_f64();
            if round >= 2 {
                if on { a.push(dt) } else { b.push(dt) }
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            8.0 / v[v.len() / 2]
        };
        println!(
            "A/B {what} on {:.2} img/s, off {:.2} img/s (medians of {} each)",
            med(&mut a),
            med(&mut b),
            a.len()
        );
        return Ok(());
    }
    let x = bench::uniform(&[8, 3, 224, 224], 1.0, 3)?;
    let (sw, sc) = time(min_s * 4.0, || drop(net.infer(&x, Ops::Ours).unwrap()));
    println!(
        "infer: {sw:.3} s per batch wall ({:.2} img/s), {sc:.3} CPU-s per batch",
        8.0 / sw
    );
    // Per-batch spread: the median is what `bench ops` reports.
    let mut t: Vec<f64> = (0..9)
        .map(|_| {
            let s = std::time::Instant::now();
            drop(net.infer(&x, Ops::Ours).unwrap());
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    println!(
        "infer x9: median {:.2} img/s, best {:.2}, worst {:.2}",
        8.0 / t[4],
        8.0 / t[0],
        8.0 / t[8]
    );
    Ok(())
}
