//! Mask post-processing: keep the two largest connected components (the two lungs), fill holes.
//!
//! Masks here are row-major `u8` buffers where any non-zero value is foreground. Components use
//! 8-connectivity (a lung's thin tip touching diagonally stays one lung); holes are background regions not
//! 4-connected to the border, which is the complement of an 8-connected foreground, as usual in topology.

/// Keeps the `keep` largest 8-connected foreground components; the others are cleared. Ties are broken by
/// scan order, so the result is deterministic.
pub fn keep_largest_components(mask: &mut [u8], width: usize, height: usize, keep: usize) {
    debug_assert_eq!(mask.len(), width * height);
    let mut label = vec![0u32; mask.len()];
    let mut sizes: Vec<usize> = vec![0]; // label 0 = background
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || label[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0usize;
        label[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if mask[j] != 0 && label[j] == 0 {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        sizes.push(size);
    }
    if sizes.len() - 1 <= keep {
        return;
    }
    let mut order: Vec<usize> = (1..sizes.len()).collect();
    // Largest first; the stable sort keeps scan order among equal sizes.
    order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]));
    let mut kept = vec![false; sizes.len()];
    for &id in order.iter().take(keep) {
        kept[id] = true;
    }
    for (m, l) in mask.iter_mut().zip(&label) {
        if *m != 0 && !kept[*l as usize] {
            *m = 0;
        }
    }
}

/// Fills holes: background pixels that cannot reach the image border through 4-connected background become
/// foreground (set to `on`).
pub fn fill_holes(mask: &mut [u8], width: usize, height: usize, on: u8) {
    debug_assert_eq!(mask.len(), width * height);
    let mut outside = vec![false; mask.len()];
    let mut stack = Vec::new();
    let seed = |i: usize, outside: &mut Vec<bool>, stack: &mut Vec<usize>| {
        if mask[i] == 0 && !outside[i] {
            outside[i] = true;
            stack.push(i);
        }
    };
    for x in 0..width {
        seed(x, &mut outside, &mut stack);
        seed((height - 1) * width + x, &mut outside, &mut stack);
    }
    for y in 0..height {
        seed(y * width, &mut outside, &mut stack);
        seed(y * width + width - 1, &mut outside, &mut stack);
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % width, i / width);
        let mut visit = |j: usize| {
            if mask[j] == 0 && !outside[j] {
                outside[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < width {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - width);
        }
        if y + 1 < height {
            visit(i + width);
        }
    }
    for (m, o) in mask.iter_mut().zip(&outside) {
        if *m == 0 && !*o {
            *m = on;
        }
    }
}

/// The paper's post-processing of a probability map: `> 0.5`, the two largest components, holes filled.
/// Returns a {0, 255} mask.
pub fn binarize(prob: &[f32], width: usize, height: usize) -> Vec<u8> {
    let mut mask: Vec<u8> = prob
        .iter()
        .map(|&p| if p > 0.5 { 255 } else { 0 })
        .collect();
    keep_largest_components(&mut mask, width, height, 2);
    fill_holes(&mut mask, width, height, 255);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(mask: &mut [u8], w: usize, x0: usize, y0: usize, x1: usize, y1: usize) {
        for y in y0..y1 {
            for x in x0..x1 {
                mask[y * w + x] = 255;
            }
        }
    }

    #[test]
    fn keeps_the_two_largest_blobs() {
        let (w, h) = (20, 10);
        let mut m = vec![0u8; w * h];
        draw(&mut m, w, 0, 0, 5, 5); // 25
        draw(&mut m, w, 7, 0, 10, 3); // 9
        draw(&mut m, w, 12, 0, 18, 6); // 36
        draw(&mut m, w, 0, 8, 2, 10); // 4
        // A diagonal touch joins two squares into one component (8-connectivity).
        m[9 * w + 10] = 255;
        m[8 * w + 11] = 255;
        keep_largest_components(&mut m, w, h, 2);
        let count = m.iter().filter(|&&v| v != 0).count();
        assert_eq!(count, 25 + 36);
        assert_eq!(m[0], 255);
        assert_eq!(m[7], 0);
        assert_eq!(m[9 * w], 0);
    }

    #[test]
    fn fills_holes_but_not_bays_open_to_the_border() {
        let (w, h) = (10, 8);
        let mut m = vec![0u8; w * h];
        draw(&mut m, w, 1, 1, 6, 6);
        m[3 * w + 3] = 0; // hole
        // A bay reaching the right border through a corridor stays background.
        draw(&mut m, w, 6, 1, 10, 2);
        draw(&mut m, w, 6, 3, 10, 4);
        fill_holes(&mut m, w, h, 255);
        assert_eq!(m[3 * w + 3], 255);
        assert_eq!(m[2 * w + 8], 0);
        assert_eq!(m[0], 0);
    }

    #[test]
    fn binarize_thresholds_strictly_above_half() {
        let p = [0.5, 0.51, 0.2, 0.9];
        assert_eq!(binarize(&p, 2, 2), vec![0, 255, 0, 255]);
    }
}
