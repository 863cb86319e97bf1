KIND=redis
source "$(dirname "$0")/test-pool.sh"
