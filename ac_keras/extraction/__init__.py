"""Local feature extraction from video files (paper section 5.2; SPEC section 7): frames, audio, flow.

Modules, each a stage a user can call alone:
- `video`: decoding with PyAV: frames sampled by presentation time (`--fps` up to `--max_frames`, or
  `--num_frames` at equal intervals), the audio track as a 16 kHz mono waveform, `VideoError` with a kind.
- `flow`: optical flow between consecutive sampled frames with OpenCV (TV-L1 where the build has it, else
  DIS), stored as TSN-style uint8 flow images.
- `audio`: the VGGish recipe: the log-mel front end in `tf.signal`, the VGGish network in Keras loading the
  released TF1 checkpoint by variable name, the released PCA and the postprocessor's quantization.
- `yt8m`: the exact YouTube-8M frame features: the 2015 Inception graph, the released PCA and whitening.
- `backbones`: `keras.applications` backbones by name and `.keras` models, with their preprocessing.
- `pca`: a PCA with whitening fitted on extracted features (`--pca_dims`), saved beside the records.
- `spec`: `extraction.json`, everything needed to extract the same features again, and the extractor it
  rebuilds.
- `pipeline`: the Apache Beam pipeline (`python -m tfrecords.extract`).

Nothing here downloads: model files come from the user's paths, or Keras's own download of ImageNet
weights on first use on a machine with internet.
"""
