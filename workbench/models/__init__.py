"""Model stage: smp architectures over timm encoders (build), offline encoder weights (encoders) and
model files with their metadata (modelfile)."""
