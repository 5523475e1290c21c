//! A checked big-endian bit reader (AU-headers, AudioSpecificConfig,
//! StreamMuxConfig): every read past the end is `None`.

#[derive(Debug, Clone)]
pub(super) struct Bits<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> Bits<'a> {
    pub fn new(data: &'a [u8]) -> Bits<'a> {
        Bits { data, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// `n` bits (at most 32) as a number.
    pub fn read(&mut self, n: u32) -> Option<u32> {
        if n > 32 || self.pos.checked_add(n as usize)? > self.data.len() * 8 {
            return None;
        }
        let mut value = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            // `n` ≤ 32: a 32-bit read shifts out nothing it needs.
            value = (value << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(value)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.data.len() * 8 {
            return None;
        }
        self.pos = end;
        Some(())
    }

    /// Bits `from..to` copied into bytes, the last one padded with zeros.
    pub fn copy(&self, from: usize, to: usize) -> Option<Vec<u8>> {
        let mut src = Bits {
            data: self.data,
            pos: from,
        };
        let mut out = Vec::with_capacity(to.checked_sub(from)?.div_ceil(8));
        let mut left = to - from;
        while left > 0 {
            let n = left.min(8);
            let v = src.read(n as u32)?;
            out.push((v << (8 - n)) as u8);
            left -= n;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_bytes_and_stops_at_the_end() {
        let mut b = Bits::new(&[0b1010_1100, 0b0101_0000]);
        assert_eq!(b.read(3), Some(0b101));
        assert_eq!(b.read(7), Some(0b011_0001));
        assert_eq!(b.position(), 10);
        assert_eq!(b.copy(2, 12), Some(vec![0b1011_0001, 0b0100_0000]));
        assert_eq!(b.read(7), None);
        assert_eq!(b.skip(6), Some(()));
        assert_eq!(b.read(1), None);
        assert_eq!(b.read(33), None);
        assert_eq!(b.read(0), Some(0));
    }
}
