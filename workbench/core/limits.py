"""Size limits on what users hand us, so that no input file can make a command allocate gigabytes.

Plain constants without imports: :mod:`workbench` sets OpenCV's own decoder limit from
:data:`MAX_IMAGE_PIXELS` before OpenCV is loaded, and every reader checks them before decoding.
"""

MAX_FILE_BYTES = 512 * 2**20        # image and mask files: larger ones are refused before they are read
MAX_IMAGE_PIXELS = 120_000_000      # width x height of any decoded image or mask (12000 x 9000 is 108 M)
MAX_INPUT_SIZE = 4096               # side of a model input (image_size, a model file's input_size)
INPUT_MULTIPLE = 32                 # encoders downsample 5 times: model input sides are multiples of 32
