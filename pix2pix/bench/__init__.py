"""`pix2pix bench`: training speed, three measurements, each in its module:

- speed.py: the classic pix2pix pipeline (a) against this project's (b) on one device, in one
  process, at several batch sizes (images/s, FLOPs, MFU, memory);
- scaling.py: this pipeline data-parallel on 1 and N processes under torchrun;
- concurrent.py: N independent batch-1 trainings sharing one device, as `dvc queue start -j N` runs a sweep.
pipeline.py holds what they share: this project's pipeline set up for timing, and the timer.
"""
