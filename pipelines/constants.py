"""Dataset statistics used when a dataset brings none of its own (named, with their sources).

`pipelines.convert` computes these from the training images and stores them in
dataset_info.json; the input pipeline prefers those. Units follow DESIGN.md: pixel values
0-255; eigenvalues of the covariance of RGB scaled to [0, 1], times 255; one unit
eigenvector per COLUMN, eigenvalues in descending order.
"""

# Mean RGB of the ImageNet training set, 0-255 (Caffe / VGG, "the mean activity over the
# training set" that the paper subtracts, per channel).
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)

# PCA of ImageNet RGB pixels from fb.resnet.torch datasets/imagenet.lua (not in the paper,
# which gives no numbers): eigenvalues for pixels in [0, 1], here times 255.
IMAGENET_RGB_EIGVAL = (0.2175 * 255.0, 0.0188 * 255.0, 0.0045 * 255.0)
IMAGENET_RGB_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

# The paper's lighting noise: alpha_i ~ N(0, 0.1).
PCA_LIGHTING_STDDEV = 0.1

# The paper stores images with the shorter side 256 and trains on 224 crops: every crop
# size in the pipeline is this fraction of the stored shorter side.
PAPER_RESIZE_SHORTER = 256
PAPER_CROP_SIZE = 224
CROP_FRACTION = PAPER_CROP_SIZE / PAPER_RESIZE_SHORTER
