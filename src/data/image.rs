//! Image decoding: PNG (8/16-bit), JPEG and DICOM into one grayscale float image in [0, 1].
//!
//! PNG and JPEG intensities are scaled linearly by their bit depth. DICOM pixel data goes
//! through the modality LUT, is inverted for MONOCHROME1 and windowed to its 5th..99th
//! percentile. The format is sniffed from the bytes, never from the file name.

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_pixeldata::PixelDecoder;

/// A decoded grayscale image, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    pub width: u32,
    pub height: u32,
    /// Intensities in [0, 1].
    pub pixels: Vec<f32>,
    /// Bits per sample in the file (8 or 16 for PNG/JPEG; Bits Stored for DICOM).
    pub bit_depth: u16,
    /// Row and column spacing in mm, where the file states it (DICOM).
    pub pixel_spacing: Option<(f64, f64)>,
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Dicom,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Dicom => "DICOM",
        })
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a PNG, JPEG or DICOM file")]
    Unknown,
    #[error("is not a valid {format}: {message}")]
    Decode { format: Format, message: String },
    #[error("empty image ({width}x{height})")]
    Empty { width: u32, height: u32 },
}

/// Sniffs the format from magic bytes.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Some(Format::Dicom)
    } else {
        None
    }
}

/// Checks that bytes decode as an image, without converting pixels (what an import needs).
///
/// PNG is decoded into its native buffer (inflate, CRCs, unfiltering); JPEG and DICOM take the
/// full [`decode`] path.
pub fn validate(bytes: &[u8]) -> Result<(u32, u32), Error> {
    match sniff(bytes).ok_or(Error::Unknown)? {
        Format::Png => {
            let err = |e: png::DecodingError| Error::Decode {
                format: Format::Png,
                message: e.to_string(),
            };
            let mut reader = png::Decoder::new(Cursor::new(bytes))
                .read_info()
                .map_err(err)?;
            let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
            let info = reader.next_frame(&mut buf).map_err(err)?;
            if info.width == 0 || info.height == 0 {
                return Err(Error::Empty {
                    width: info.width,
                    height: info.height,
                });
            }
            // Trailing chunks (and their CRCs) must be intact too.
            reader.finish().map_err(err)?;
            Ok((info.width, info.height))
        }
        _ => decode(bytes).map(|i| (i.width, i.height)),
    }
}

/// Decodes an image file's bytes.
pub fn decode(bytes: &[u8]) -> Result<GrayImage, Error> {
    let format = sniff(bytes).ok_or(Error::Unknown)?;
    let image = match format {
        Format::Png | Format::Jpeg => decode_raster(bytes, format)?,
        Format::Dicom => decode_dicom(bytes)?,
    };
    if image.width == 0 || image.height == 0 {
        return Err(Error::Empty {
            width: image.width,
            height: image.height,
        });
    }
    Ok(image)
}

fn decode_raster(bytes: &[u8], format: Format) -> Result<GrayImage, Error> {
    let fmt = match format {
        Format::Png => image::ImageFormat::Png,
        _ => image::ImageFormat::Jpeg,
    };
    let img = image::load_from_memory_with_format(bytes, fmt).map_err(|e| Error::Decode {
        format,
        message: e.to_string(),
    })?;
    let (width, height) = (img.width(), img.height());
    let sixteen = matches!(
        img.color(),
        image::ColorType::L16
            | image::ColorType::La16
            | image::ColorType::Rgb16
            | image::ColorType::Rgba16
    );
    let pixels: Vec<f32> = if sixteen {
        img.to_luma16()
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 65535.0)
            .collect()
    } else {
        img.to_luma8()
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 255.0)
            .collect()
    };
    Ok(GrayImage {
        width,
        height,
        pixels,
        bit_depth: if sixteen { 16 } else { 8 },
        pixel_spacing: None,
        format,
    })
}

fn decode_dicom(bytes: &[u8]) -> Result<GrayImage, Error> {
    let err = |message: String| Error::Decode {
        format: Format::Dicom,
        message,
    };
    // The 128-byte preamble precedes the "DICM" magic that `from_reader` expects.
    let obj = dicom_object::OpenFileOptions::new()
        .from_reader(Cursor::new(&bytes[128..]))
        .map_err(|e| err(e.to_string()))?;
    let decoded = obj.decode_pixel_data().map_err(|e| err(e.to_string()))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(err(format!(
            "{} samples per pixel; knee radiographs must be grayscale",
            decoded.samples_per_pixel()
        )));
    }
    let (width, height) = (decoded.columns(), decoded.rows());
    let frame: Vec<f32> = decoded.to_vec_frame(0).map_err(|e| err(e.to_string()))?;
    let monochrome1 = decoded.photometric_interpretation().as_str() == "MONOCHROME1";
    let bit_depth = decoded.bits_stored();
    let pixel_spacing = [tags::PIXEL_SPACING, tags::IMAGER_PIXEL_SPACING]
        .into_iter()
        .find_map(|tag| {
            let v = obj.element(tag).ok()?.to_multi_float64().ok()?;
            (v.len() == 2).then(|| (v[0], v[1]))
        });
    let pixels = window_percentiles(&frame, 0.05, 0.99, monochrome1);
    Ok(GrayImage {
        width,
        height,
        pixels,
        bit_depth,
        pixel_spacing,
        format: Format::Dicom,
    })
}

/// Maps values to [0, 1] between two percentiles (clamping outside), inverting if asked.
pub fn window_percentiles(values: &[f32], lo: f64, hi: f64, invert: bool) -> Vec<f32> {
    if values.is_empty() {
        return Vec::new();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let at = |q: f64| {
        let pos = q * (sorted.len() - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos - pos.floor());
        let j = (i + 1).min(sorted.len() - 1);
        f64::from(sorted[i]) + frac * (f64::from(sorted[j]) - f64::from(sorted[i]))
    };
    let (a, b) = (at(lo), at(hi));
    let span = if b > a { b - a } else { 1.0 };
    values
        .iter()
        .map(|&v| {
            let t = ((f64::from(v) - a) / span).clamp(0.0, 1.0) as f32;
            if invert { 1.0 - t } else { t }
        })
        .collect()
}

/// Encodes a 16-bit grayscale PNG (used by the synthetic generator and tests).
pub fn encode_png16(width: u32, height: u32, pixels: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().expect("writing to a Vec cannot fail");
        let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_be_bytes()).collect();
        writer
            .write_image_data(&bytes)
            .expect("pixel count matches width x height");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png16_round_trip() {
        let px: Vec<u16> = (0..12).map(|i| i * 5000).collect();
        let img = decode(&encode_png16(4, 3, &px)).unwrap();
        assert_eq!((img.width, img.height, img.bit_depth), (4, 3, 16));
        assert!((img.pixels[1] - 5000.0 / 65535.0).abs() < 1e-6);
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(decode(b"hello"), Err(Error::Unknown)));
        let mut png = encode_png16(4, 4, &[7; 16]);
        png.truncate(40);
        assert!(matches!(decode(&png), Err(Error::Decode { .. })));
    }

    #[test]
    fn windowing_clamps_and_inverts() {
        let v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        let w = window_percentiles(&v, 0.05, 0.99, false);
        assert_eq!(w[0], 0.0);
        assert_eq!(w[100], 1.0);
        assert!((w[50] - 45.0 / 94.0).abs() < 1e-6);
        let inv = window_percentiles(&v, 0.05, 0.99, true);
        assert_eq!(inv[0], 1.0);
    }
}
