//! The cost–quality curve of `router eval --plot`, as a PNG: the share of the strong model's
//! quality gain recovered against the share of calls sent to it, for the heads, the baselines
//! and random routing.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use switchboard_router_train::evaluation::{CostQuality, Ranking};

/// Where Debian, Fedora and macOS keep a sans-serif font; text is drawn only when one is found,
/// so that the binary carries no font file.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

const COLOURS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

/// Registers a system font for the plot's text; false when there is none.
fn register_system_font() -> bool {
    FONTS.iter().any(|path| {
        std::fs::read(path).ok().is_some_and(|bytes| {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

pub fn cost_quality(path: &Path, ranking: &Ranking) -> anyhow::Result<()> {
    let ours = ranking
        .curve
        .as_ref()
        .context("the evaluated examples carry no strong and weak model outcomes to plot")?;
    let mut curves: Vec<(String, &CostQuality)> =
        vec![(format!("switchboard (APGR {:.3})", ours.apgr()), ours)];
    for baseline in &ranking.baselines {
        if let Some(curve) = &baseline.curve {
            curves.push((
                format!("{} (APGR {:.3})", baseline.name, curve.apgr()),
                curve,
            ));
        }
    }
    let with_text = register_system_font();
    if !with_text {
        tracing::warn!("no system font found: the plot has no labels");
    }
    draw(path, &curves, with_text)
        .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

fn draw(
    path: &Path,
    curves: &[(String, &CostQuality)],
    with_text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = curves
        .iter()
        .flat_map(|(_, c)| c.curve.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(
                "MMLU: quality gain recovered vs calls to the strong model",
                ("sans-serif", 22),
            )
            .x_label_area_size(45)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0f64..100f64, 0f64..top * 1.05)?;
    let mut mesh = chart.configure_mesh();
    if with_text {
        mesh.x_desc("calls to the strong model (%)")
            .y_desc("performance gap recovered");
    } else {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw()?;

    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (100.0, 1.0)], BLACK.mix(0.4)))?
        .label("random (APGR 0.500)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for (i, (name, curve)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                curve
                    .curve
                    .iter()
                    .map(|&(share, gain)| (share * 100.0, gain)),
                colour.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    if with_text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use switchboard_router_train::dataset::Outcome;
    use switchboard_router_train::evaluation::Baseline;

    use super::*;

    #[test]
    fn draws_a_png_of_every_curve() {
        let outcomes: Vec<Outcome> = (0..40)
            .map(|i| Outcome {
                weak_right: i % 3 == 0,
                strong_right: i % 5 != 0,
            })
            .collect();
        let scores: Vec<f32> = (0..40).map(|i| ((i * 7) % 40) as f32 / 40.0).collect();
        let reversed: Vec<f32> = scores.iter().map(|s| 1.0 - s).collect();
        let ranking = Ranking {
            examples: 40,
            auroc: None,
            curve: CostQuality::of(&scores, &outcomes),
            baselines: vec![Baseline {
                name: "reversed",
                auroc: None,
                curve: CostQuality::of(&reversed, &outcomes),
            }],
        };
        let path = std::env::temp_dir().join(format!("cost-quality-{}.png", std::process::id()));
        cost_quality(&path, &ranking).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 5_000);
        std::fs::remove_file(path).unwrap();

        let without_outcomes = Ranking::default();
        assert!(cost_quality(&std::env::temp_dir().join("none.png"), &without_outcomes).is_err());
    }
}
