//! A focused decoder for sequential-DCT Huffman JPEG (ITU-T T.81 processes 1, 2 and 4: SOF0/SOF1) at 8 or 12
//! bits, one component: what DICOM's JPEG Extended transfer syntax (`1.2.840.10008.1.2.4.51`) holds in CR
//! archives. `jpeg-decoder` and `zune-jpeg` refuse 12-bit precision, so this fills that gap in pure Rust.
//!
//! Handles restart intervals, 8- and 16-bit quantisation tables and tables redefined between markers.
//! Refuses, with a clear error, progressive (SOF2/6), lossless (SOF3/7), hierarchical and arithmetic-coded
//! streams, more than one component, and a height given by DNL. The IDCT is the separable floating-point
//! form of T.81 A.3.3, rounded to nearest: libjpeg's integer IDCTs agree within ±1.

/// Why a stream was not decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JpegError {
    #[error("unsupported JPEG: {0}")]
    Unsupported(String),
    #[error("corrupt JPEG stream: {0}")]
    Corrupt(String),
}

type Result<T> = std::result::Result<T, JpegError>;

fn corrupt(m: impl Into<String>) -> JpegError {
    JpegError::Corrupt(m.into())
}

/// A decoded single-component image: `width * height` samples, row-major, in `0..2^precision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    pub precision: u8,
    pub samples: Vec<u16>,
}

/// The frame header's sample precision, if `data` is a JPEG with a SOF marker before its first scan.
/// Lets the caller route only 12-bit streams here.
pub fn precision(data: &[u8]) -> Option<u8> {
    let mut pos = 2;
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    while pos + 4 <= data.len() {
        if data[pos] != 0xFF {
            return None;
        }
        let marker = data[pos + 1];
        if marker == 0xFF {
            pos += 1;
            continue;
        }
        let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return data.get(pos + 4).copied();
        }
        if marker == 0xDA {
            return None;
        }
        pos += 2 + len;
    }
    None
}

const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

const LOOKUP_BITS: u32 = 9;

/// A Huffman table as T.81 F.2.2.3 decodes it, with a 9-bit first-level lookup.
#[derive(Clone)]
struct Huffman {
    /// `(symbol, length)` for every 9-bit prefix whose code is at most 9 bits long; length 0 = slow path.
    lookup: Vec<(u8, u8)>,
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Self> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != values.len() || total > 256 {
            return Err(corrupt("Huffman table counts do not match its values"));
        }
        let mut lookup = vec![(0u8, 0u8); 1 << LOOKUP_BITS];
        let mut maxcode = [-1i32; 18];
        let mut valptr = [0i32; 17];
        let mut mincode = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            if n > 0 {
                valptr[len] = k as i32;
                mincode[len] = code as i32;
                for _ in 0..n {
                    if code >= (1 << len) {
                        return Err(corrupt(
                            "Huffman table has more codes than its lengths allow",
                        ));
                    }
                    if len as u32 <= LOOKUP_BITS {
                        let shift = LOOKUP_BITS - len as u32;
                        for fill in 0..(1u32 << shift) {
                            lookup[((code << shift) | fill) as usize] = (values[k], len as u8);
                        }
                    }
                    code += 1;
                    k += 1;
                }
                maxcode[len] = code as i32 - 1;
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Self {
            lookup,
            maxcode,
            valptr,
            mincode,
            values,
        })
    }
}

/// Entropy-coded segment reader: removes 0xFF00 stuffing, stops at markers, and fails when the decoder
/// consumes bits the stream does not hold (truncated or corrupt data) instead of inventing zeros.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
    /// Of the `nbits` buffered, how many (the lowest) are padding past the end or a marker.
    npad: u32,
    marker: Option<u8>,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            acc: 0,
            nbits: 0,
            npad: 0,
            marker: None,
        }
    }

    fn fill(&mut self) {
        while self.nbits <= 56 {
            let byte = if self.marker.is_some() || self.pos >= self.data.len() {
                None
            } else if self.data[self.pos] == 0xFF {
                match self.data.get(self.pos + 1) {
                    Some(0x00) => {
                        self.pos += 2;
                        Some(0xFF)
                    }
                    Some(&m) if m != 0xFF => {
                        self.marker = Some(m);
                        None
                    }
                    // 0xFF fill bytes before a marker.
                    Some(_) => {
                        self.pos += 1;
                        continue;
                    }
                    None => {
                        self.pos += 1;
                        None
                    }
                }
            } else {
                self.pos += 1;
                Some(self.data[self.pos - 1])
            };
            self.acc |= (byte.unwrap_or(0) as u64) << (56 - self.nbits);
            self.nbits += 8;
            if byte.is_none() {
                self.npad += 8;
            }
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        if self.nbits < n {
            self.fill();
        }
        (self.acc >> (64 - n)) as u32
    }

    fn consume(&mut self, n: u32) -> Result<()> {
        if n > self.nbits - self.npad.min(self.nbits) {
            return Err(corrupt(match self.marker {
                Some(m) => format!("entropy-coded data runs into marker 0xFF{m:02X}"),
                None => "entropy-coded data ends early (truncated)".into(),
            }));
        }
        self.acc <<= n;
        self.nbits -= n;
        Ok(())
    }

    fn bits(&mut self, n: u32) -> Result<u32> {
        if n == 0 {
            return Ok(0);
        }
        let v = self.peek(n);
        self.consume(n)?;
        Ok(v)
    }

    fn symbol(&mut self, h: &Huffman) -> Result<u8> {
        let prefix = self.peek(LOOKUP_BITS) as usize;
        let (sym, len) = h.lookup[prefix];
        if len > 0 {
            self.consume(len as u32)?;
            return Ok(sym);
        }
        let word = self.peek(16) as i32;
        for len in (LOOKUP_BITS as usize + 1)..=16 {
            let code = word >> (16 - len);
            if code <= h.maxcode[len] {
                self.consume(len as u32)?;
                let idx = h.valptr[len] + code - h.mincode[len];
                return h
                    .values
                    .get(idx as usize)
                    .copied()
                    .ok_or_else(|| corrupt("bad Huffman code"));
            }
        }
        Err(corrupt("bad Huffman code"))
    }

    /// A `size`-bit magnitude, sign-extended as T.81 F.2.2.1 EXTEND.
    fn receive_extend(&mut self, size: u8) -> Result<i32> {
        if size == 0 {
            return Ok(0);
        }
        if size > 16 {
            return Err(corrupt(format!("coefficient category {size} out of range")));
        }
        let v = self.bits(size as u32)? as i32;
        Ok(if v < 1 << (size - 1) {
            v - (1 << size) + 1
        } else {
            v
        })
    }

    /// Skips to the next RSTn after a restart interval, discarding the padding bits.
    fn restart(&mut self) -> Result<()> {
        // Any bits left belong to the byte-aligned padding; un-read whole bytes only if no marker was seen.
        self.acc = 0;
        self.nbits = 0;
        self.npad = 0;
        if self.marker.is_none() {
            // The buffer read ahead; find the marker from where we are.
            let is_marker =
                |p: usize| self.data[p] == 0xFF && !matches!(self.data[p + 1], 0x00 | 0xFF);
            while self.pos + 1 < self.data.len() && !is_marker(self.pos) {
                self.pos += 1;
            }
            if self.pos + 1 >= self.data.len() {
                return Err(corrupt("restart marker missing (truncated)"));
            }
            self.marker = Some(self.data[self.pos + 1]);
        }
        match self.marker {
            Some(0xD0..=0xD7) => {
                self.pos += 2;
                self.marker = None;
                Ok(())
            }
            Some(m) => Err(corrupt(format!(
                "expected a restart marker, found 0xFF{m:02X}"
            ))),
            None => Err(corrupt("restart marker missing")),
        }
    }
}

struct Frame {
    precision: u8,
    height: usize,
    width: usize,
    component_id: u8,
    quant_table: usize,
}

/// Cosine basis `c[x][u] = C(u)/2 * cos((2x+1)uπ/16)`, so a 1-D IDCT is `f(x) = Σ_u c[x][u] F(u)`.
fn idct_basis() -> [[f32; 8]; 8] {
    let mut c = [[0f32; 8]; 8];
    for (x, row) in c.iter_mut().enumerate() {
        for (u, v) in row.iter_mut().enumerate() {
            let cu = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            *v = (cu / 2.0 * (((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0).cos()) as f32;
        }
    }
    c
}

/// Decodes one sequential Huffman JPEG with a single component. `expected` (width, height), when given, must
/// match the frame header: checked before the output is allocated, so a corrupt header cannot ask for gigabytes.
pub fn decode(data: &[u8], expected: Option<(usize, usize)>) -> Result<Decoded> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err(corrupt("no SOI marker at the start"));
    }
    let mut pos = 2usize;
    let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac: [Option<Huffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0usize;
    let mut frame: Option<Frame> = None;
    loop {
        // Skip fill bytes; anything but a marker here is corrupt.
        while pos + 1 < data.len() && data[pos] == 0xFF && data[pos + 1] == 0xFF {
            pos += 1;
        }
        if pos + 4 > data.len() {
            return Err(corrupt("stream ends before the scan (truncated)"));
        }
        if data[pos] != 0xFF {
            return Err(corrupt(format!("expected a marker at byte {pos}")));
        }
        let marker = data[pos + 1];
        let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
        if len < 2 || pos + 2 + len > data.len() {
            return Err(corrupt(format!(
                "marker 0xFF{marker:02X} segment overruns the stream"
            )));
        }
        let seg = &data[pos + 4..pos + 2 + len];
        pos += 2 + len;
        match marker {
            0xC0 | 0xC1 => {
                if seg.len() < 6 {
                    return Err(corrupt("short frame header"));
                }
                let precision = seg[0];
                let height = u16::from_be_bytes([seg[1], seg[2]]) as usize;
                let width = u16::from_be_bytes([seg[3], seg[4]]) as usize;
                let nf = seg[5] as usize;
                if precision != 8 && precision != 12 {
                    return Err(corrupt(format!(
                        "sample precision {precision} (8 or 12 expected)"
                    )));
                }
                if nf != 1 {
                    return Err(JpegError::Unsupported(format!(
                        "{nf} components at {precision} bits (one expected)"
                    )));
                }
                if height == 0 {
                    return Err(JpegError::Unsupported(
                        "height defined by a DNL marker".into(),
                    ));
                }
                if width == 0 || seg.len() < 9 {
                    return Err(corrupt("frame header without width or component"));
                }
                if let Some((w, h)) = expected
                    && (w, h) != (width, height)
                {
                    return Err(corrupt(format!(
                        "frame is {width}x{height}, the DICOM header says {w}x{h}"
                    )));
                }
                let quant_table = seg[8] as usize;
                if quant_table > 3 {
                    return Err(corrupt("quantisation table index out of range"));
                }
                frame = Some(Frame {
                    precision,
                    height,
                    width,
                    component_id: seg[6],
                    quant_table,
                });
            }
            0xC2 | 0xC6 => return Err(JpegError::Unsupported("progressive JPEG".into())),
            0xC3 | 0xC7 => {
                return Err(JpegError::Unsupported(
                    "lossless JPEG (not a DCT process)".into(),
                ));
            }
            0xC5 => return Err(JpegError::Unsupported("hierarchical JPEG".into())),
            0xC9..=0xCF => {
                return Err(JpegError::Unsupported("arithmetic-coded JPEG".into()));
            }
            0xC4 => {
                let mut s = seg;
                while !s.is_empty() {
                    if s.len() < 17 {
                        return Err(corrupt("short Huffman table"));
                    }
                    let (class, id) = (s[0] >> 4, (s[0] & 15) as usize);
                    if class > 1 || id > 3 {
                        return Err(corrupt("Huffman table class or index out of range"));
                    }
                    let mut counts = [0u8; 16];
                    counts.copy_from_slice(&s[1..17]);
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    if s.len() < 17 + n {
                        return Err(corrupt("short Huffman table"));
                    }
                    let table = Huffman::new(&counts, s[17..17 + n].to_vec())?;
                    if class == 0 {
                        dc[id] = Some(table);
                    } else {
                        ac[id] = Some(table);
                    }
                    s = &s[17 + n..];
                }
            }
            0xDB => {
                let mut s = seg;
                while !s.is_empty() {
                    let (pq, id) = (s[0] >> 4, (s[0] & 15) as usize);
                    let size = if pq == 0 { 64 } else { 128 };
                    if pq > 1 || id > 3 || s.len() < 1 + size {
                        return Err(corrupt("bad quantisation table"));
                    }
                    let mut t = [0u16; 64];
                    for (k, q) in t.iter_mut().enumerate() {
                        *q = if pq == 0 {
                            s[1 + k] as u16
                        } else {
                            u16::from_be_bytes([s[1 + 2 * k], s[2 + 2 * k]])
                        };
                    }
                    quant[id] = Some(t);
                    s = &s[1 + size..];
                }
            }
            0xDD => {
                if seg.len() < 2 {
                    return Err(corrupt("short DRI segment"));
                }
                restart_interval = u16::from_be_bytes([seg[0], seg[1]]) as usize;
            }
            0xDA => {
                let f = frame
                    .as_ref()
                    .ok_or_else(|| corrupt("scan before the frame header"))?;
                if seg.len() < 6 || seg[0] != 1 || seg[1] != f.component_id {
                    return Err(corrupt("scan header does not name the frame's component"));
                }
                let (td, ta) = ((seg[2] >> 4) as usize, (seg[2] & 15) as usize);
                let (ss, se, ahal) = (seg[3], seg[4], seg[5]);
                if ss != 0 || se != 63 || ahal != 0 {
                    return Err(corrupt(format!(
                        "sequential scan must cover coefficients 0..63 (found Ss={ss}, Se={se}, Ah/Al={ahal:#04x})"
                    )));
                }
                let dc = dc
                    .get(td)
                    .and_then(|t| t.as_ref())
                    .ok_or_else(|| corrupt("scan uses an undefined DC Huffman table"))?;
                let ac = ac
                    .get(ta)
                    .and_then(|t| t.as_ref())
                    .ok_or_else(|| corrupt("scan uses an undefined AC Huffman table"))?;
                let q = quant[f.quant_table]
                    .ok_or_else(|| corrupt("frame uses an undefined quantisation table"))?;
                return decode_scan(data, pos, f, dc, ac, &q, restart_interval);
            }
            0xD9 => return Err(corrupt("EOI before any scan")),
            0xD0..=0xD8 | 0x01 => {
                return Err(corrupt(format!("unexpected marker 0xFF{marker:02X}")));
            }
            // APPn, COM, DNL, DHP, EXP, JPGn: skipped.
            _ => {}
        }
    }
}

fn decode_scan(
    data: &[u8],
    pos: usize,
    f: &Frame,
    dc: &Huffman,
    ac: &Huffman,
    q: &[u16; 64],
    restart_interval: usize,
) -> Result<Decoded> {
    let (bw, bh) = (f.width.div_ceil(8), f.height.div_ceil(8));
    let mut out = vec![0u16; f.width * f.height];
    let basis = idct_basis();
    let mut basis_t = [[0f32; 8]; 8];
    for (x, row) in basis.iter().enumerate() {
        for (u, &b) in row.iter().enumerate() {
            basis_t[u][x] = b;
        }
    }
    let shift = (1i32 << (f.precision - 1)) as f32;
    let max = (1u32 << f.precision) - 1;
    let mut bits = Bits::new(data, pos);
    let mut pred = 0i32;
    let mut coef = [0i32; 64];
    for n in 0..bw * bh {
        if restart_interval > 0 && n > 0 && n % restart_interval == 0 {
            bits.restart()?;
            pred = 0;
        }
        coef.fill(0);
        let t = bits.symbol(dc)?;
        // Wrapping: a corrupt stream may overflow; it then decodes to garbage, never panics.
        pred = pred.wrapping_add(bits.receive_extend(t)?);
        coef[0] = pred.wrapping_mul(q[0] as i32);
        let mut k = 1;
        while k < 64 {
            let rs = bits.symbol(ac)?;
            let (r, s) = ((rs >> 4) as usize, rs & 15);
            if s == 0 {
                if r == 15 {
                    k += 16;
                    continue;
                }
                break;
            }
            k += r;
            if k > 63 {
                return Err(corrupt("AC coefficient index past 63"));
            }
            coef[ZIGZAG[k]] = bits.receive_extend(s)?.wrapping_mul(q[k] as i32);
            k += 1;
        }
        // Rows then columns of the separable IDCT, each an axpy over 8 lanes (vectorises). Most rows of a
        // radiograph's blocks are zero: skip them, and in the column pass the zero rows below the last one used.
        let mut tmp = [[0f32; 8]; 8];
        let mut rows_used = 0;
        for (v, t) in tmp.iter_mut().enumerate() {
            for u in 0..8 {
                let c = coef[v * 8 + u];
                if c != 0 {
                    let c = c as f32;
                    for (o, b) in t.iter_mut().zip(&basis_t[u]) {
                        *o += b * c;
                    }
                    rows_used = v + 1;
                }
            }
        }
        let mut block = [[0f32; 8]; 8];
        for (y, acc) in block.iter_mut().enumerate() {
            *acc = [shift + 0.5; 8];
            for (v, t) in tmp.iter().enumerate().take(rows_used) {
                let b = basis[y][v];
                for (o, t) in acc.iter_mut().zip(t) {
                    *o += b * t;
                }
            }
        }
        let (bx, by) = (n % bw, n / bw);
        let w = (f.width - bx * 8).min(8);
        for (y, acc) in block.iter().enumerate().take((f.height - by * 8).min(8)) {
            let row = &mut out[(by * 8 + y) * f.width + bx * 8..][..w];
            for (o, s) in row.iter_mut().zip(acc) {
                // Round half up (0.5 added above) and clamp; `as` truncates, which is floor once non-negative
                // (f32::round is a libm call here).
                *o = (s.max(0.0) as u32).min(max) as u16;
            }
        }
    }
    Ok(Decoded {
        width: f.width,
        height: f.height,
        precision: f.precision,
        samples: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idct_of_dc_only_is_flat() {
        let b = idct_basis();
        // F(0,0) = 8 * d gives a flat block of d: C(0)^2/4 * 8 = 1.
        let col: f32 = b[3][0] * b[5][0] * 8.0;
        assert!((col - 1.0).abs() < 1e-6);
    }

    #[test]
    fn refuses_progressive_and_garbage() {
        let prog = [
            0xFF, 0xD8, 0xFF, 0xC2, 0x00, 0x0B, 12, 0, 8, 0, 8, 1, 1, 0x11, 0,
        ];
        assert!(matches!(
            decode(&prog, None),
            Err(JpegError::Unsupported(_))
        ));
        assert!(matches!(
            decode(b"not a jpeg", None),
            Err(JpegError::Corrupt(_))
        ));
        assert!(matches!(
            decode(&[0xFF, 0xD8, 0xFF], None),
            Err(JpegError::Corrupt(_))
        ));
    }

    #[test]
    fn huffman_table_rejects_overfull_lengths() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes cannot exist
        assert!(Huffman::new(&counts, vec![0, 1, 2]).is_err());
    }

    fn sof(marker: u8, precision: u8, height: u16, components: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, marker, 0, 8 + 3 * components, precision];
        v.extend(height.to_be_bytes());
        v.extend(8u16.to_be_bytes());
        v.push(components);
        for c in 0..components {
            v.extend([c + 1, 0x11, 0]);
        }
        v
    }

    #[test]
    fn refuses_what_it_does_not_implement_with_the_reason() {
        let cases = [
            (sof(0xC9, 12, 8, 1), "arithmetic"),
            (sof(0xC3, 12, 8, 1), "lossless"),
            (sof(0xC5, 12, 8, 1), "hierarchical"),
            (sof(0xC1, 12, 8, 3), "3 components"),
            (sof(0xC1, 12, 0, 1), "DNL"),
        ];
        for (bytes, why) in cases {
            match decode(&bytes, None) {
                Err(JpegError::Unsupported(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        match decode(&sof(0xC1, 10, 8, 1), None) {
            Err(JpegError::Corrupt(m)) => assert!(m.contains("precision 10"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_frame_larger_than_the_header_says_is_refused_before_allocating() {
        let mut v = sof(0xC1, 12, 60000, 1);
        v[9..11].copy_from_slice(&60000u16.to_be_bytes());
        match decode(&v, Some((8, 8))) {
            Err(JpegError::Corrupt(m)) => assert!(m.contains("60000x60000"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn precision_is_read_from_the_frame_header() {
        let mut with_app = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2];
        with_app.extend(&sof(0xC1, 12, 8, 1)[2..]);
        assert_eq!(precision(&with_app), Some(12));
        assert_eq!(precision(&sof(0xC0, 8, 8, 1)), Some(8));
        assert_eq!(precision(b"\xFF\xD8\xFF\xDA\x00\x02"), None);
        assert_eq!(precision(b"GIF89a"), None);
    }
}
