"""Flow matching (rectified flow) on the 2-D checkerboard with a small MLP; ~3 minutes on a 2-core CPU.

python -m experiments.main --config=configs/checkerboard.py --workdir=/tmp/diffax_checkerboard

The checkerboard density is uniform on the dark cells, so the summary line of the samples reports
the fraction of samples that land on the support next to the sliced Wasserstein distance.
"""

from configs import toy2d


def get_config():
    config = toy2d.get_config()
    config.data.dataset = "checkerboard"  # data.source="toy" (from toy2d)

    config.process.name = "rectified_flow"
    config.continuous.prediction = "velocity"
    config.continuous.weighting = "flow_matching"
    config.continuous.time_sampler = "stratified"

    config.model.dim = 128
    config.model.depth = 4
    config.train.num_steps = 5000
    config.train.batch_size = 512

    config.sample.sampler = "ode_heun"
    config.sample.num_steps = 50
    # Uniform in t: the default Karras grid degenerates when alpha(1) = 0 (rectified flow).
    config.sample.grid = "uniform"
    return config
