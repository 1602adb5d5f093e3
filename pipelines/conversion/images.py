"""Image repair for the converter: any image Pillow reads (ImageNet's CMYK, grayscale, PNG
files named .JPEG, alpha) becomes an RGB JPEG with the shorter side the paper's 256, and the
pixel sums the RGB statistics are made of."""

import io
import math

import numpy as np

# Pixel statistics use every 4th row and column of every stored image: 1/16 of the pixels,
# ~5,000 per 256-px image, ~6e9 over ImageNet's training set (far more than a stable 3x3
# covariance needs) for ~0.1 ms per image.
STATS_PIXEL_STRIDE = 4


class BadImageError(Exception):
    """A file that cannot be turned into an RGB JPEG; the message is the reason."""


def encode_rgb_jpeg(data, *, resize_shorter, quality):
    """Decodes any image Pillow reads and re-encodes it as an RGB JPEG; with `resize_shorter=0`
    an RGB JPEG is kept byte for byte (as TensorFlow's own ImageNet tool keeps it).

    The format comes from the bytes, not the name (ImageNet has PNG and CMYK files named
    .JPEG). Alpha is composited over white; grayscale, palette and CMYK become RGB: those,
    and every other format, are the only images re-encoded without a resize.

    Args:
      data: the file's bytes.
      resize_shorter: rescale (up or down) so the shorter side is this; 0 keeps the size.
      quality: JPEG quality.

    Returns:
      (jpeg bytes, height, width, the RGB uint8 array that was encoded).

    Raises:
      BadImageError: the bytes are empty or not a decodable image.
    """
    from PIL import Image

    if not data:
        raise BadImageError("empty file")
    try:
        image = Image.open(io.BytesIO(data))
        if resize_shorter and image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves the
            # shorter side >= resize_shorter: much faster for large photos.
            scale = resize_shorter / min(image.size)
            image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        image.load()
        keep = not resize_shorter and image.format == "JPEG" and image.mode == "RGB"
        image = _to_rgb(image)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(f"not a decodable image ({type(error).__name__}: {error})") from None
    if keep:  # the original bytes: no second JPEG generation
        return data, image.height, image.width, np.asarray(image)
    if resize_shorter:
        width, height = image.size
        scale = resize_shorter / min(width, height)
        size = (
            resize_shorter if width <= height else max(1, round(width * scale)),
            resize_shorter if height < width else max(1, round(height * scale)),
        )
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), image.height, image.width, np.asarray(image)


def _to_rgb(image):
    from PIL import Image

    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits before the colour conversion.
        array = np.asarray(image, dtype=np.float64)
        peak = max(array.max(), 1.0)
        image = Image.fromarray(np.uint8(np.clip(array * (255.0 / peak), 0, 255)), mode="L")
    return image.convert("RGB")


def pixel_sums(rgb):
    pixels = rgb[::STATS_PIXEL_STRIDE, ::STATS_PIXEL_STRIDE].reshape(-1, 3).astype(np.float64)
    return pixels.sum(axis=0), pixels.T @ pixels, len(pixels)
