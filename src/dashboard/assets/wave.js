// The recording player: WAV decoding, the two waveforms, markers.
