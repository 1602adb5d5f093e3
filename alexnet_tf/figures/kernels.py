"""Figure 3: the conv1 kernels, each contrast-stretched and scaled up, the towers apart."""

import dataclasses

import numpy as np

COLUMNS = 16  # kernels per row: 48 per tower are 3 rows, as in the paper's figure
SCALE = 4  # nearest-neighbour upscaling: 11 x 11 kernels become 44 x 44 pixels
GAP = 2  # pixels between kernels
TOWER_GAP = 12  # pixels between the towers' blocks
BACKGROUND = 255


@dataclasses.dataclass(frozen=True)
class KernelFigure:
    """The figure (uint8 [H, W, 3]) and where each kernel is: `boxes[i]` = (top, left) of
    kernel i's `tile` x `tile` square."""

    image: np.ndarray
    boxes: tuple
    tile: int


def stretch(kernels):
    """Each kernel [N, h, w, 3] mapped linearly onto [0, 1] by its own minimum and maximum
    (every kernel's contrast is visible whatever its norm)."""
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    high = kernels.max(axis=(1, 2, 3), keepdims=True)
    return (kernels - low) / np.maximum(high - low, 1e-12)


def kernel_figure(kernel, *, groups=1, scale=SCALE, columns=COLUMNS):
    """`KernelFigure` of a conv1 kernel [h, w, 3, N]: one block of rows per group (the paper's
    two towers: kernels 0-47 above, 48-95 below), each kernel stretched (`stretch`) and scaled
    `scale` times by pixel repetition."""
    kernels = stretch(np.transpose(np.asarray(kernel, np.float32), (3, 0, 1, 2)))
    count, height, width = kernels.shape[:3]
    if height != width:
        raise ValueError(f"Expected square kernels. Received: {height}x{width}")
    tile = height * scale
    per_group = count // groups
    columns = min(columns, per_group)
    rows = -(-per_group // columns)
    block_height = rows * tile + (rows - 1) * GAP
    image = np.full((groups * block_height + (groups - 1) * TOWER_GAP, columns * tile + (columns - 1) * GAP, 3),
                    BACKGROUND, np.uint8)
    pixels = np.round(kernels * 255).astype(np.uint8).repeat(scale, axis=1).repeat(scale, axis=2)
    boxes = []
    for index in range(count):
        group, within = divmod(index, per_group)
        row, column = divmod(within, columns)
        top, left = group * (block_height + TOWER_GAP) + row * (tile + GAP), column * (tile + GAP)
        image[top:top + tile, left:left + tile] = pixels[index]
        boxes.append((top, left))
    return KernelFigure(image, tuple(boxes), tile)


def conv1_figure(model, network):
    """The `KernelFigure` of a Keras AlexNet's conv1 (`network`: its AlexNetSpec, for the towers)."""
    return kernel_figure(model.get_layer("conv1").kernel.numpy(), groups=network.groups)
