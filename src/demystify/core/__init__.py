"""What every stage shares: params and their schema (config), atomic writes (io), the stage
process (stage_process), stored frames and images with their cached digests, the data gate, the
ffmpeg binary and figures. A change here reruns every stage that lists the folder."""
