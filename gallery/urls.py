from django.urls import path

from pagecache.views import public_page

from . import api, views

app_name = "gallery"

urlpatterns = [
    # public_page: the same for every anonymous visitor, so kept whole (pagecache, and the
    # changes that drop them in gallery/invalidation.py).
    path("", public_page(views.GalleryView.as_view()), name="image-list"),
    path("home", public_page(views.GalleryView.as_view()), name="home"),
    path("images/<int:pk>/", public_page(views.ImageDetailView.as_view()), name="image-detail"),
    path("recommend", views.recommend_redirect, name="recommend"),
    path("search/", views.SearchView.as_view(), name="search"),
    # The JSON API (schema and docs pages in imagerec/urls.py). The similar-images URL is the
    # one scripts already use: same place, same keys (with more beside them), same errors.
    path("api/images/", public_page(api.ImageListView.as_view()), name="api-image-list"),
    path("api/images/<int:pk>/", public_page(api.ImageDetailView.as_view()), name="api-image-detail"),
    path("api/images/<int:pk>/similar/", public_page(api.SimilarImagesView.as_view()), name="api-similar"),
    path("api/search/", api.SearchView.as_view(), name="api-search"),
    # Staff uploads: never kept by the page cache (answers differ per user and change).
    path("api/uploads/", api.UploadView.as_view(), name="api-upload"),
    path("api/uploads/check/", api.UploadCheckView.as_view(), name="api-upload-check"),
    path("api/uploads/archives/<int:pk>/", api.ArchiveUploadView.as_view(), name="api-upload-archive"),
]
